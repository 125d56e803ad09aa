"""The schema registry must serve exactly what EMAnnotationSchemas 5.26.3 serves.

The reference file is dumped from the real upstream package (see tests/data/schemas/README.md);
opencave's registry is written independently as declarative data, so every comparison here can fail.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from opencave.errors import NotFound
from opencave.services import schemas
from opencave.services.schemas import FieldKind

REFERENCE_FILE = Path(__file__).parent / "data" / "schemas" / "emannotationschemas_5.26.3.json"
REFERENCE = json.loads(REFERENCE_FILE.read_text())
NAMES = REFERENCE["schema_names"]
TABLES = ("annotation", "segmentation", "flat")


def test_reference_is_the_pinned_upstream_release():
    assert REFERENCE["versions"]["emannotationschemas"] == schemas.UPSTREAM_VERSION == "5.26.3"
    assert REFERENCE["versions"]["marshmallow-jsonschema"] == "0.10.0"
    assert len(NAMES) == 57


def test_schema_names_are_upstream_registry_order():
    assert schemas.schema_names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_json_schema_equals_upstream(name):
    ours = schemas.json_schema(name)
    assert ours == REFERENCE["json_schemas"][name]
    # It must survive the wire unchanged (no tuples, sentinels or non-JSON values).
    assert json.loads(json.dumps(ours)) == REFERENCE["json_schemas"][name]


def test_json_schema_document_shape_for_clients():
    doc = schemas.json_schema("bound_tag")
    assert list(doc) == ["$schema", "definitions", "$ref"]
    assert doc["$ref"] == "#/definitions/BoundTagAnnotation"
    # Nested point classes come first, the main class last (as upstream emits them).
    assert list(doc["definitions"]) == ["BoundSpatialPoint", "BoundTagAnnotation"]
    assert doc["definitions"]["BoundTagAnnotation"]["properties"]["pt"]["$ref"] == "#/definitions/BoundSpatialPoint"


def test_json_schema_returns_a_fresh_document_each_call():
    first = schemas.json_schema("synapse")
    first["definitions"]["SynapseSchema"]["properties"].clear()
    assert schemas.json_schema("synapse") == REFERENCE["json_schemas"]["synapse"]


def test_multi_and_all_json_schemas():
    picked = ["cell_type_local", "synapse"]
    multi = schemas.json_schemas(picked)
    assert list(multi) == picked
    assert multi == {n: REFERENCE["json_schemas"][n] for n in picked}
    everything = schemas.all_json_schemas()
    assert list(everything) == NAMES
    assert everything == REFERENCE["json_schemas"]


@pytest.mark.parametrize("name", NAMES)
def test_column_layouts_equal_upstream_models(name):
    ours = schemas.layout(name)
    ref = REFERENCE["columns"][name]
    for table in TABLES:
        assert [asdict(c) for c in schemas.columns(name, table)] == ref[table], table
    assert ours.is_reference == ref["is_reference"]
    assert ours.has_segmentation == ref["has_segmentation"]


def test_synapse_flat_order_from_spec():
    assert [c.name for c in schemas.columns("synapse", "flat")] == [
        "id",
        "valid",
        "pre_pt_position",
        "pre_pt_supervoxel_id",
        "pre_pt_root_id",
        "post_pt_position",
        "post_pt_supervoxel_id",
        "post_pt_root_id",
        "ctr_pt_position",
        "size",
    ]
    assert [c.name for c in schemas.columns("synapse", "annotation")][:4] == [
        "id",
        "created",
        "deleted",
        "superceded_id",
    ]


def test_root_id_like_bigints_are_not_segmentation_columns():
    flat = {c.name: c for c in schemas.columns("cell_similarity", "flat")}
    assert flat["match_pt_root_id"].segmentation
    assert not flat["match_root_id"].segmentation
    assert not flat["query_root_id"].segmentation


def test_unknown_table_kind_is_rejected():
    with pytest.raises(ValueError):
        schemas.columns("synapse", "materialized")


@pytest.mark.parametrize(
    "call",
    [
        lambda n: schemas.json_schema(n),
        lambda n: schemas.json_schemas(["synapse", n]),
        lambda n: schemas.get_schema(n),
        lambda n: schemas.layout(n),
        lambda n: schemas.columns(n),
        lambda n: schemas.apply_valid_rule(n, {}),
    ],
)
def test_unknown_schema_is_not_found(call):
    with pytest.raises(NotFound) as info:
        call("no_such_schema")
    err = info.value
    assert err.status == 404
    assert err.code == "unknown_schema"
    assert "no_such_schema" in err.message
    assert "/schema/api/v2/type" in err.message


@pytest.mark.parametrize(
    "case",
    REFERENCE["valid_rules"],
    ids=[f"{c['schema']}-{i}" for i, c in enumerate(REFERENCE["valid_rules"])],
)
def test_valid_rules_match_upstream_load(case):
    out = schemas.apply_valid_rule(case["schema"], case["payload"])
    assert ("valid" in out) == case["has_valid"]
    assert out.get("valid") == case["valid"]


def test_valid_rule_does_not_mutate_the_payload():
    payload = {"pre_pt": {"position": [1, 2, 3]}, "post_pt": {"position": [1, 2, 3]}, "valid": True}
    schemas.apply_valid_rule("synapse", payload)
    assert payload["valid"] is True


def test_shared_classes_have_one_definition():
    """A class name (definition key) must mean the same thing in every schema that uses it."""
    seen: dict[str, dict] = {}
    for name in NAMES:
        for class_name, definition in schemas.json_schema(name)["definitions"].items():
            assert seen.setdefault(class_name, definition) == definition, (name, class_name)


def test_registry_is_declarative_data():
    for name in NAMES:
        schema = schemas.get_schema(name)
        assert schema.fields, name
        for field in schema.fields:
            assert isinstance(field.kind, FieldKind)
            assert (field.point is not None) == (field.kind is FieldKind.POINT)
