"""Free-text and boolean tags bound to the segmentation, with optional user and valid-id columns."""

from __future__ import annotations

from opencave.services.schemas.catalog.base import ANNOTATION, BOUND_SPATIAL_POINT, SPATIAL_POINT
from opencave.services.schemas.fields import bigint, boolean, point, string, user_id

TAG_LOCATION = "Location associated with the tag"
TEXT_TAG = "Arbitrary text tag"
USER_FROM_AUTH = "User who created the tag, auto-populated from auth."
VALID_ID_DESCRIPTION = (
    "Root id of the object when location was assessed. If the pt_root_id has changed, "
    "the associated segment has undergone proofreading."
)

BOUND_TAG = ANNOTATION.extend(
    "BoundTagAnnotation",
    point("pt", BOUND_SPATIAL_POINT, TAG_LOCATION, required=True),
    string("tag", TEXT_TAG, required=True),
)

BOUND_DOUBLE_TAG = BOUND_TAG.extend(
    "BoundDoubleTagAnnotation",
    string("tag2", TEXT_TAG, required=True),
)

BOUND_2TAG = BOUND_TAG.extend(
    "Bound2TagAnnotation",
    point("pt2", BOUND_SPATIAL_POINT, TAG_LOCATION, required=True),
    string("tag2", TEXT_TAG, required=True),
)

BOUND_TAG_USER = BOUND_TAG.extend(
    "BoundTagAnnotationUser",
    user_id("user_id", USER_FROM_AUTH, required=True),
)

# The only *_user schema whose user_id is optional upstream.
BOUND_DOUBLE_TAG_USER = BOUND_DOUBLE_TAG.extend(
    "BoundDoubleTagAnnotationUser",
    user_id("user_id", USER_FROM_AUTH),
)

BOUND_2TAG_USER = BOUND_2TAG.extend(
    "Bound2TagAnnotationUser",
    user_id("user_id", USER_FROM_AUTH, required=True),
)

BRAINCIRCUITS_BOUND_TAG_USER = ANNOTATION.extend(
    "BrainCircuitsBoundTagAnnotationUser",
    point("pt", BOUND_SPATIAL_POINT, TAG_LOCATION, required=True),
    string("tag", TEXT_TAG, required=True),
    user_id("user_id", USER_FROM_AUTH, required=True),
)

BOUND_BOOL = ANNOTATION.extend(
    "BoundBoolAnnotation",
    point("pt", BOUND_SPATIAL_POINT, TAG_LOCATION, required=True),
    boolean("tag", "Boolean at location", required=True),
)

BOUND_BOOL_WITH_VALID = BOUND_BOOL.extend(
    "BoundBoolWithValid",
    bigint("valid_id", VALID_ID_DESCRIPTION, required=True),
)

BOUND_TAG_WITH_VALID = BOUND_TAG.extend(
    "BoundTagWithValid",
    bigint("valid_id", VALID_ID_DESCRIPTION, required=True),
)

# An unbound point: no segmentation columns at all.
SPATIAL_POINT_BOOL_WITH_VALID = ANNOTATION.extend(
    "SpatialPointBoolWithValid",
    point("pt", SPATIAL_POINT, TAG_LOCATION, required=True),
    boolean("tag", "Boolean at location", required=True),
    bigint("valid_id", "Root id of the object when location was assessed.", required=True),
)
