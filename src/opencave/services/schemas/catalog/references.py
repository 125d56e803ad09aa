"""Generic reference schemas: values, tags and groups attached to rows of another table."""

from __future__ import annotations

from opencave.services.schemas.catalog.base import (
    BOUND_SPATIAL_POINT,
    REFERENCE_ANNOTATION,
    REFERENCE_TAG_ANNOTATION,
    SEGMENTATION_POINT_DESCRIPTION,
)
from opencave.services.schemas.fields import floating, integer, point, string

# Upstream misspells the metadata key, so the JSON Schema carries "desription" and no description.
REFERENCE_TAG_FLOAT = REFERENCE_TAG_ANNOTATION.extend(
    "ReferenceTagFloat",
    floating(
        "value",
        required=True,
        extras={"desription": "Float value to be attached to the annotation"},
    ),
)

REFERENCE_INTEGER = REFERENCE_ANNOTATION.extend(
    "ReferenceInteger",
    integer("value", "Integer value to be attached to the annotation", required=True),
    doc="Reference annotation with an integer value",
)

REFERENCE_TAG_WITH_CONFIDENCE = REFERENCE_ANNOTATION.extend(
    "ReferenceTagWithConfidence",
    floating("confidence", "Confidence value to be attached to the annotation", required=True),
    doc="Reference annotation with a float value describing confidence in the tag",
)

SIMPLE_GROUP = REFERENCE_ANNOTATION.extend(
    "SimpleGroup",
    integer("group_id", "group id", required=True),
)

SIMPLE_GROUP_INDEXED = REFERENCE_ANNOTATION.extend(
    "SimpleGroupIndexed",
    integer("group_id", "group id", required=True, index=True),
)

FLAT_SEGMENTATION_REFERENCE_SINGLE_POINT = REFERENCE_ANNOTATION.extend(
    "FlatSegmentationReferenceSinglePoint",
    point("pt", BOUND_SPATIAL_POINT, SEGMENTATION_POINT_DESCRIPTION, required=True),
    doc="Bound spatial point reference to another annotation",
)

FLY_NEUROPIL = REFERENCE_ANNOTATION.extend(
    "FlyNeuropil",
    string("neuropil", "neuropil name", required=True),
)
