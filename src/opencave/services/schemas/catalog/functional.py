"""Functional-imaging co-registration and functional-property schemas (MICrONS, V1DD)."""

from __future__ import annotations

from opencave.services.schemas.catalog.base import ANNOTATION, BOUND_SPATIAL_POINT, REFERENCE_ANNOTATION
from opencave.services.schemas.fields import floating, integer, point

CELL_BODY = point(
    "pt",
    BOUND_SPATIAL_POINT,
    "location of cell body of functional cell",
    required=True,
)
SESSION = integer("session", "session ID of imaging", required=True)
SCAN_IDX = integer("scan_idx", "index of the scan within the session", required=True)
UNIT_ID = integer("unit_id", "unique functional cell ID within the scan", required=True)
RESIDUAL = floating(
    "residual",
    "distance between nucleus centroid and functional centroid after transformation",
)

FUNCTIONAL_COREGISTRATION = ANNOTATION.extend(
    "FunctionalCoregistration",
    CELL_BODY,
    integer("func_id", "functional cell ID", required=True),
)

FUNCTIONAL_UNIT_COREGISTRATION = ANNOTATION.extend(
    "FunctionalUnitCoregistration",
    CELL_BODY,
    SESSION,
    SCAN_IDX,
    UNIT_ID,
)

V1DD_FUNCTIONAL_UNIT_COREGISTRATION = ANNOTATION.extend(
    "V1DDFunctionalUnitCoregistration",
    CELL_BODY,
    integer(
        "column",
        "The index of the column, a set of volumes that were vertically stacked",
        required=True,
    ),
    integer("volume", "index of the volume within the column", required=True),
    integer("plane", "index of imaging plane within the volume"),
    integer("roi", "index of the roi within the plane", required=True),
    RESIDUAL,
    floating("score", "a confidence score associated with match"),
)

FUNCTIONAL_UNIT_COREGISTRATION_EXTENDED = REFERENCE_ANNOTATION.extend(
    "FunctionalUnitCoregistrationExtended",
    SESSION,
    SCAN_IDX,
    UNIT_ID,
    integer("field", "index of imaging field of cell within the scan"),
    RESIDUAL,
    floating("score", "confidence score associated with match"),
)

FUNCTIONAL_PROPERTIES_BCM = REFERENCE_ANNOTATION.extend(
    "FunctionalPropertiesBCM",
    SESSION,
    SCAN_IDX,
    UNIT_ID,
    floating("pref_ori", "preferred orientation in radians (0 - pi)", required=True),
    floating("pref_dir", "preferred direction in radians (0 - 2pi)", required=True),
    floating("gOSI", "global orientation selectivity index", required=True),
    floating("gDSI", "global direction selectivity index", required=True),
    floating("cc_abs", "prediction performance of the model, higher is better", required=True),
)

_READOUT = (
    "coordinate of the readout location, an approximation of receptive field center in "
    "stimulus space; (-1, -1) bottom-left, (1, 1) top-right"
)
_ANGLE = "vertical bar moving right is 0 and orientation increases counter-clockwise"

# Redefines cc_abs, pref_ori and pref_dir (same columns, new descriptions, same position).
DIGITAL_TWIN_PROPERTIES_BCM = FUNCTIONAL_PROPERTIES_BCM.extend(
    "DigitalTwinPropertiesBCM",
    floating(
        "cc_abs",
        "Test set performance of the digital twin model unit, higher is better",
        required=True,
    ),
    floating(
        "cc_max",
        "Neuron variability score used to normalize digital twin model unit performance",
        required=True,
    ),
    floating("cc_norm", "Normalized model unit performance, higher is better", required=True),
    floating("OSI", "orientation selectivity index", required=True),
    floating("DSI", "direction selectivity index", required=True),
    floating("pref_ori", f"Preferred orientation in degrees (0 - 180), {_ANGLE}", required=True),
    floating("pref_dir", f"Preferred direction in degrees (0 - 360), {_ANGLE}", required=True),
    floating("readout_loc_x", f"X {_READOUT}", required=True),
    floating("readout_loc_y", f"Y {_READOUT}", required=True),
)
