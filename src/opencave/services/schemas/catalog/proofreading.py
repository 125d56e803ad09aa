"""Proofreading status of cells and compartments, tied to the root id that was assessed."""

from __future__ import annotations

from opencave.services.schemas.catalog.base import ANNOTATION, BOUND_SPATIAL_POINT
from opencave.services.schemas.fields import bigint, boolean, point, string, user_id
from opencave.services.schemas.model import Field

PROOFREAD_CHOICES = ("non", "clean", "extended")
OPTIONS_TEXT = (
    "Options are: 'non' to indicate no comprehensive proofreading, 'clean' to indicate "
    "comprehensive removal of false merges, and 'extended' to mean comprehensive extension "
    "of neurite tips"
)

# Abstract base (not registered).
POINT_WITH_VALID = ANNOTATION.extend(
    "PointWithValid",
    point("pt", BOUND_SPATIAL_POINT, "Core location on proofread object", required=True),
    bigint(
        "valid_id",
        "Root id of the object when proofread status was assigned. If the pt_root_id of the "
        "cell differs, the proofreading status may not apply.",
        required=True,
    ),
)


def _status(name: str, what: str) -> Field:
    return string(
        name,
        f"Proofread status of {what}. {OPTIONS_TEXT}",
        required=True,
        choices=PROOFREAD_CHOICES,
    )


PROOFREAD_STATUS = POINT_WITH_VALID.extend("ProofreadStatus", _status("status", "cell"))

COMPARTMENT_PROOFREAD_STATUS = POINT_WITH_VALID.extend(
    "CompartmentProofreadStatus",
    _status("status_dendrite", "the dendrite only"),
    _status("status_axon", "the axon only"),
)

PROOFREADING_BOOL_STATUS_USER = POINT_WITH_VALID.extend(
    "ProofreadingBoolStatusUser",
    boolean("proofread", "Proofread status of cell.", required=True),
    user_id(
        "user_id",
        "User who assessed the proofreading status, auto-populated from auth.",
        required=True,
    ),
)

COMPARTMENT_PROOFREAD_STATUS_STRATEGY = POINT_WITH_VALID.extend(
    "CompartmentProofreadStatusStrategy",
    boolean(
        "status_dendrite",
        "Proofread status of the dendrite only. True indicates dendrite is at least clean.",
        required=True,
    ),
    boolean(
        "status_axon",
        "Proofread status of the axon only. True indicates axon is at least clean.",
        required=True,
    ),
    string(
        "strategy_dendrite",
        "Strategy used when proofreading dendrite. See table description for more details.",
        required=True,
    ),
    string(
        "strategy_axon",
        "Strategy used when proofreading axon. See table description for more details.",
        required=True,
    ),
)
