"""Dump the upstream EMAnnotationSchemas registry as reference JSON for opencave's tests.

Run with the scratch virtualenv that has the real package installed (never with opencave's):

    python -m venv /tmp/emas-venv
    /tmp/emas-venv/bin/pip install emannotationschemas==5.26.3
    /tmp/emas-venv/bin/python tests/data/schemas/generate_reference.py

It writes ``emannotationschemas_<version>.json`` next to this file: registry order, the JSON
Schema that ``GET /schema/api/v2/type/<name>`` serves (marshmallow-jsonschema's ``JSONSchema``
dump of a schema instance, as upstream's blueprint does) and the SQL column layouts of the
annotation, segmentation and flat models built by ``emannotationschemas.models``.
"""

from __future__ import annotations

import json
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import marshmallow as mm
from geoalchemy2 import Geometry
from marshmallow_jsonschema import JSONSchema
from sqlalchemy import BigInteger, Boolean, DateTime, Float, Integer, String

import emannotationschemas as emas
from emannotationschemas import models

warnings.simplefilter("ignore")

TABLE, REFERENCE, PCG = "T", "R", "P"
FK_NAMES = {f"{TABLE}.id": "annotation_table", f"{REFERENCE}.id": "reference_table"}
SQL_TYPES = [
    (BigInteger, "BIGINT"),
    (Integer, "INTEGER"),
    (Float, "FLOAT"),
    (String, "VARCHAR"),
    (Boolean, "BOOLEAN"),
    (DateTime, "TIMESTAMP"),
]


def sql_type(column) -> str:
    if isinstance(column.type, Geometry):
        return f"geometry({column.type.geometry_type})"
    for cls, name in SQL_TYPES:
        if isinstance(column.type, cls):
            return name
    raise TypeError(f"unmapped column type {column.type!r}")


def describe(table, segmentation_columns: set[str]) -> list[dict]:
    out = []
    for column in table.columns:
        index = bool(column.index)
        if isinstance(column.type, Geometry):
            index = bool(column.type.use_N_D_index)
        fks = [FK_NAMES[fk.target_fullname] for fk in column.foreign_keys]
        out.append(
            {
                "name": column.name,
                "type": sql_type(column),
                "primary_key": bool(column.primary_key),
                "nullable": bool(column.nullable),
                "index": index,
                "references": fks[0] if fks else None,
                "segmentation": column.name in segmentation_columns,
            }
        )
    return out


def layouts(name: str) -> dict:
    meta = {"reference_table": REFERENCE}
    # reset_cache=True clears the SQLAlchemy metadata before each model, so take each table at once
    anno = models.make_model_from_schema(TABLE, name, None, meta, reset_cache=True).__table__
    seg = models.make_model_from_schema(TABLE, name, PCG, meta, reset_cache=True).__table__
    flat = models.make_flat_model(TABLE, name, meta, reset_cache=True).__table__
    _, seg_schema = models.split_annotation_schema(emas.get_schema(name))
    seg_names = set(seg_schema._declared_fields)
    flat_fields = emas.get_flat_schema(name)._declared_fields.values()
    return {
        "annotation": describe(anno, seg_names),
        "segmentation": describe(seg, seg_names),
        "flat": describe(flat, seg_names),
        "has_segmentation": bool(seg_names),
        "is_reference": any(isinstance(f, emas.schemas.base.ReferenceTableField) for f in flat_fields),
    }


def _pt(root=None) -> dict:
    return {"position": [1, 2, 3]} if root is None else {"position": [1, 2, 3], "root_id": root}


def _synapse_like(extra: dict) -> list[dict]:
    return [
        {"pre_pt": _pt(a), "post_pt": _pt(b), "ctr_pt": _pt(), "valid": True, **extra}
        for a, b in ((5, 5), (5, 6), (None, 6), (5, None))
    ]


# Payloads whose `valid` flag upstream's post_load hooks rewrite (plus a few schemas without hooks).
VALID_RULE_SAMPLES: dict[str, list[dict]] = {
    "synapse": _synapse_like({"size": 1.0}),
    "nocleft_synapse": _synapse_like({}),
    "nocenter_synapse": _synapse_like({}),
    "fly_synapse": _synapse_like({}),
    "fly_nt_synapse": _synapse_like({}),
    "plastic_synapse": _synapse_like({"plasticity": 1}),
    "contact": [
        {"sidea_pt": _pt(a), "sideb_pt": _pt(b), "valid": True}
        for a, b in ((5, 5), (5, 6), (None, 6))
    ],
    "extended_classical_cell_type": [
        {"pt": _pt(), "cell_type": t, "valid": v} for t, v in (("basket", False), ("foo", True))
    ],
    **{
        name: [
            {**extra, "classification_system": system, "cell_type": cell_type, "valid": False}
            for system, cell_type in (
                ("classical", "pyramidal"),
                ("classical", "L5 PT"),
                ("allen_cortex_excitatory", "L5 PT"),
                ("ivscc_m", "aspiny_s_16"),
                ("valence", "x"),
                ("my_system", "anything"),
            )
        ]
        for name, extra in (
            ("cell_type_local", {"pt": _pt()}),
            ("cell_type_reference", {"target_id": 1}),
            ("cell_type_reference_user", {"target_id": 1, "user_id": 7}),
        )
    },
    "bound_tag": [{"pt": _pt(), "tag": "a", "valid": True}],
    "glia_contact": [{"glia_pt": _pt(5), "object_pt": _pt(5), "valid": True}],
    "fly_cell_type": [{"pt": _pt(), "cell_type": "x", "hemisphere": "L", "valid": False}],
}


def valid_rule_cases() -> list[dict]:
    cases = []
    for name, payloads in VALID_RULE_SAMPLES.items():
        for payload in payloads:
            loaded = emas.get_schema(name)().load(payload)
            cases.append(
                {
                    "schema": name,
                    "payload": payload,
                    "has_valid": "valid" in loaded,
                    "valid": loaded.get("valid"),
                }
            )
    return cases


def main() -> None:
    names = emas.get_types()
    ref = {
        "generated_by": "tests/data/schemas/generate_reference.py",
        "versions": {
            pkg: version(pkg)
            for pkg in ("emannotationschemas", "marshmallow", "marshmallow-jsonschema", "SQLAlchemy", "GeoAlchemy2")
        },
        "schema_names": names,
        "json_schemas": {n: JSONSchema().dump(emas.get_schema(n)()) for n in names},
        "columns": {n: layouts(n) for n in names},
        "valid_rules": valid_rule_cases(),
    }
    out = Path(__file__).with_name(f"emannotationschemas_{emas.__version__}.json")
    out.write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {out} ({len(names)} schemas)", file=sys.stderr)


if __name__ == "__main__":
    main()
