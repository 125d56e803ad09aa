"""Building blocks every schema derives from: point objects and the annotation/reference bases."""

from __future__ import annotations

from opencave.services.schemas.fields import bigint, boolean, point, position, reference, segmentation, string
from opencave.services.schemas.model import SchemaDef

SPATIAL_POINT = SchemaDef(
    "SpatialPoint",
    (
        position(
            "position",
            "spatial position in voxels of x,y,z of annotation",
            required=True,
            index=True,
        ),
    ),
    doc="a position in the segmented volume",
    additional_properties=False,
)

BOUND_SPATIAL_POINT = SPATIAL_POINT.extend(
    "BoundSpatialPoint",
    segmentation("supervoxel_id", "supervoxel id of this point"),
    segmentation("root_id", "root id of the bound point", index=True),
    doc="a position in the segmented volume that is associated with an object",
)

DERIVED_SPATIAL_POINT = BOUND_SPATIAL_POINT.extend(
    "DerivedSpatialPoint",
    bigint(
        "dependent_chunk",
        "Chunk id for the point at the time the annotation was made",
        required=True,
    ),
    bigint("level", "Chunk level"),
    doc="a bound point that also records the chunk it was derived from",
)

ANNOTATION = SchemaDef(
    "AnnotationSchema",
    (boolean("valid", "is this annotation valid", default=False),),
    doc="schema with the type of annotation",
)

REFERENCE_ANNOTATION = ANNOTATION.extend(
    "ReferenceAnnotation",
    reference("target_id", "annotation this references", required=True, index=True),
    doc="a annotation that references another annotation",
)

TAG = string("tag", "tag to attach to annoation", required=True)

# Upstream mixes a plain tag schema in *before* ReferenceAnnotation, so `tag` comes first.
REFERENCE_TAG_ANNOTATION = SchemaDef(
    "ReferenceTagAnnotation",
    (TAG, *REFERENCE_ANNOTATION.fields),
    doc="A tag attached to another annotation",
)

SEGMENTATION_POINT_DESCRIPTION = "the point to be used for attaching objects to the dynamic segmentation"

REPRESENTATIVE_POINT = ANNOTATION.extend(
    "RepresentativePoint",
    point("pt", BOUND_SPATIAL_POINT, SEGMENTATION_POINT_DESCRIPTION, required=True),
    doc="Bound spatial point annotation",
)
