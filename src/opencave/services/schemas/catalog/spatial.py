"""Geometric annotations: nuclei, contacts and values tied to derived (chunk-aware) points."""

from __future__ import annotations

from opencave.services.schemas.catalog.base import (
    ANNOTATION,
    BOUND_SPATIAL_POINT,
    DERIVED_SPATIAL_POINT,
    SPATIAL_POINT,
)
from opencave.services.schemas.fields import floating, integer, point, string
from opencave.services.schemas.rules import DistinctRoots

NUCLEUS_DETECTION = ANNOTATION.extend(
    "NucleusDetection",
    floating("volume", "the volume of the nucleus detected in um^3"),
    point(
        "pt",
        BOUND_SPATIAL_POINT,
        "the centroid of the nucleus, to be linked to the segmentation",
        required=True,
    ),
    point("bb_start", SPATIAL_POINT, "low corner of the bounding box"),
    point("bb_end", SPATIAL_POINT, "high corner of the bounding box"),
)

GLIA_CONTACT = ANNOTATION.extend(
    "GliaContact",
    point(
        "glia_pt",
        BOUND_SPATIAL_POINT,
        "Glia-side point near a glia-object contact",
        required=True,
        extras={"order": 0},
    ),
    point(
        "object_pt",
        BOUND_SPATIAL_POINT,
        "Object-side point near a glia-object contact",
        required=True,
        extras={"order": 2},
    ),
    floating("size", "size of contact"),
)

CONTACT = ANNOTATION.extend(
    "Contact",
    integer("size", "contact area (in units of voxel count)"),
    point("sidea_pt", BOUND_SPATIAL_POINT, "point on sidea of contact", required=True),
    point("sideb_pt", BOUND_SPATIAL_POINT, "point on sideb of contact", required=True),
    point("ctr_pt", SPATIAL_POINT, "point on contact interface"),
    valid_rule=DistinctRoots("sidea_pt", "sideb_pt"),
)

DERIVED_TAG = ANNOTATION.extend(
    "DerivedTag",
    point("pt", DERIVED_SPATIAL_POINT, required=True),
    string("tag", "Description of point", required=True),
    doc="Basic spatial tag using DerivedSpatialPoint information",
)

DERIVED_NUMERIC = ANNOTATION.extend(
    "DerivedNumeric",
    point("pt", DERIVED_SPATIAL_POINT, required=True),
    floating("value", "Numerical value specified by the table description"),
    doc="Floating point numeric value associated with a specific segmentation",
)
