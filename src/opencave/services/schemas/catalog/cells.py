"""Cell-type classifications (local, reference, fly) and their allowed-type validity rules."""

from __future__ import annotations

from opencave.services.schemas.catalog.base import ANNOTATION, BOUND_SPATIAL_POINT, REFERENCE_ANNOTATION
from opencave.services.schemas.fields import point, string, user_id
from opencave.services.schemas.rules import AllowedValues, ClassificationSystems

# Known classification systems; a cell type outside its system's list is stored with valid=false.
CLASSIFICATION_SYSTEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("valence", ("e", "i", "g", "uncertain")),
    (
        "ivscc_m",
        tuple(
            [f"spiny_{i}" for i in range(1, 15)]
            + [f"aspiny_s_{i}" for i in range(1, 17)]
            + [f"aspiny_d_{i}" for i in range(1, 6)]
            + ["uncertain"]
        ),
    ),
    (
        "classical",
        (
            "chandelier",
            "pyramidal",
            "martinotti",
            "pv",
            "sst",
            "vip",
            "clutch",
            "ivy",
            "basket",
            "neurogliaform",
            "astrocyte",
            "microglia-perivascular",
            "microglia-perineuronal",
            "uncertain",
        ),
    ),
    (
        "allen_cortex_excitatory",
        (
            "L2/3 PC",
            "L4 PC",
            "L5 IT",
            "L5 NP",
            "L5 PT",
            "L6 Tall",
            "L6 Middle",
            "L6 Inverted",
            "L6 Other",
            "Unsure",
        ),
    ),
    (
        "allen_cortex_inhibitory",
        (
            "CCK Large Basket",
            "Martinotti",
            "Basket (regular)",
            "Inhibitory Targeting",
            "SST",
            "PV Basket",
            "Neurgliaform",
            "Chandelier Cell",
            "VIP",
            "Unsure",
        ),
    ),
)

EXTENDED_CLASSICAL_CELL_TYPES: tuple[str, ...] = (
    "basket",
    "chandelier",
    "oligodendrocyte",
    "vip-i",
    "martinotti",
    "neurogliaform",
    "vip-chat",
    "vip-apical",
    "ivy",
    "clutch",
    "sst",
    "pyramidal",
    "uncertain",
)

CLASSIFICATION_RULE = ClassificationSystems(CLASSIFICATION_SYSTEMS)
CLASSIFICATION_SYSTEM = string("classification_system", "Classification system followed", required=True)
CELL_TYPE = string("cell_type", "Cell type name", required=True)
CLASSIFICATION_LOCATION = "Location associated with classification"

CELL_TYPE_LOCAL = ANNOTATION.extend(
    "CellTypeLocal",
    CLASSIFICATION_SYSTEM,
    CELL_TYPE,
    point("pt", BOUND_SPATIAL_POINT, CLASSIFICATION_LOCATION, required=True),
    valid_rule=CLASSIFICATION_RULE,
)

CELL_TYPE_REFERENCE = REFERENCE_ANNOTATION.extend(
    "CellTypeReference",
    CLASSIFICATION_SYSTEM,
    CELL_TYPE,
    valid_rule=CLASSIFICATION_RULE,
)

CELL_TYPE_REFERENCE_USER = CELL_TYPE_REFERENCE.extend(
    "CellTypeReferenceUser",
    user_id(
        "user_id",
        "User who created the cell type classification, auto-populated from auth.",
        required=True,
    ),
    doc="CellTypeReference schema with user tracking",
)

# The allowed types are *not* an enum: other values load fine but get valid=false.
EXTENDED_CLASSICAL_CELL_TYPE = ANNOTATION.extend(
    "ExtendedClassicalCellType",
    point("pt", BOUND_SPATIAL_POINT, "Location in space", required=True),
    string("cell_type", "cell type name", required=True),
    valid_rule=AllowedValues("cell_type", EXTENDED_CLASSICAL_CELL_TYPES),
)

FLY_CELL_TYPE = ANNOTATION.extend(
    "FlyCellType",
    point("pt", BOUND_SPATIAL_POINT, CLASSIFICATION_LOCATION, required=True),
    CELL_TYPE,
    string(
        "hemisphere",
        "Cell hemisphere",
        required=True,
        default="U",
        choices=("L", "R", "M", "U"),
    ),
)

FLY_CELL_TYPE_EXT = FLY_CELL_TYPE.extend(
    "FlyCellTypeExt",
    string("driver_line", "Driver line name"),
    string("synonym", "Synonym"),
)
