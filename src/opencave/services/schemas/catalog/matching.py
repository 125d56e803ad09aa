"""Cross-dataset cell matching and similarity scores."""

from __future__ import annotations

from opencave.services.schemas.catalog.base import ANNOTATION, BOUND_SPATIAL_POINT, REFERENCE_ANNOTATION
from opencave.services.schemas.fields import bigint, boolean, floating, point, string

QUERY_ROOT_ID = bigint("query_root_id", "Static root ID used for score calculation", required=True)
MATCH_ID = string(
    "match_id",
    "Unique identifier for cell from another dataset",
    required=True,
    index=True,
)
_NBLAST = "NBLAST similarity score [for CAVE schema, could be any numeric score]"

CELL_MATCH = ANNOTATION.extend(
    "CellMatch",
    point(
        "pt",
        BOUND_SPATIAL_POINT,
        "Source cell identity (pt_root_id, pt_supervoxel_id, pt_position)",
        required=True,
    ),
    QUERY_ROOT_ID,
    MATCH_ID,
    floating("score", f"Normalised {_NBLAST}", required=True),
    boolean(
        "validation",
        "False if not separately validated, True if separately validated",
        default=False,
    ),
    doc="Schema for matching cells between datasets",
)

# query_root_id / match_root_id are plain BIGINTs, not segmentation columns: they are never updated.
CELL_SIMILARITY = ANNOTATION.extend(
    "CellSimilarity",
    point(
        "pt",
        BOUND_SPATIAL_POINT,
        "Query cell identity (pt_root_id, pt_supervoxel_id, pt_position)",
        required=True,
    ),
    point(
        "match_pt",
        BOUND_SPATIAL_POINT,
        "Target cell identity (match_root_id, match_supervoxel_id, match_position)",
        required=True,
    ),
    bigint(
        "query_root_id",
        "Static root ID for query cell at time of score calculation",
        required=True,
    ),
    bigint(
        "match_root_id",
        "Static root ID for target cell at time of score calculation",
        required=True,
    ),
    floating("score", "Numeric similarity score between the two cells", required=True),
    doc="Schema for cell similarity scoring between two cells",
)

CELL_MATCH_REFERENCE = REFERENCE_ANNOTATION.extend(
    "CellMatchReference",
    QUERY_ROOT_ID,
    MATCH_ID,
    floating("score", f"Normalized {_NBLAST}", required=True),
    boolean(
        "validation",
        "False if not validated by a human, True if validated by a human",
        default=False,
    ),
    doc="Reference annotation version of CellMatch schema",
)
