"""``client.materialize.tables`` / ``.views`` (caveclient-spec §9.13): the generated keyword
filters, the requests they make, and the same filters as caveclient's table manager."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import responses

from opencave.client.errors import ServerIncompatibilityError
from opencave.client.table_manager import InvalidInequalityException, TableManager, ViewManager, schema_columns

from .mat_mocks import (
    M2,
    M3,
    MAT,
    QUERY_STRING,
    SCHEMA,
    genuine_client,
    mock_local_services,
    mock_query,
    mock_table_metadata,
    mock_versions,
    opencave_client,
    request_json,
)

REF = "allen_column_mtypes_v2"
NUC = "nucleus_detection_v0"
TABLES_METADATA = [
    {
        "created": "2023-08-21T21:19:05.917336",
        "valid": True,
        "id": 32080,
        "table_name": REF,
        "aligned_volume": "test_volume",
        "schema": "cell_type_reference",
        "schema_type": "cell_type_reference",
        "user_id": "56",
        "description": "Cluster-based M-types & more",
        "notice_text": None,
        "reference_table": NUC,
        "flat_segmentation_source": None,
        "voxel_resolution_x": 4.0,
        "voxel_resolution_y": 4.0,
        "voxel_resolution_z": 40.0,
    },
    {
        "created": "2020-11-02T18:56:35.530100",
        "valid": True,
        "id": 32131,
        "table_name": f"{NUC}__test_v1",
        "aligned_volume": "test_volume",
        "schema": "nucleus_detection",
        "schema_type": "nucleus_detection",
        "user_id": "121",
        "description": "Nucleus detections.",
        "notice_text": None,
        "reference_table": None,
        "flat_segmentation_source": "precomputed://gs://bucket/nuclei",
        "segmentation_source": "",
        "pcg_table_name": "test_v1",
        "annotation_table": NUC,
        "voxel_resolution_x": 4.0,
        "voxel_resolution_y": 4.0,
        "voxel_resolution_z": 40.0,
    },
]
POINTS = {
    "SpatialPoint": {"required": ["position"], "properties": {"position": {"type": "array"}}, "type": "object"},
    "BoundSpatialPoint": {
        "required": ["position"],
        "properties": {
            "position": {"type": "array"},
            "root_id": {"type": "integer"},
            "supervoxel_id": {"type": "integer"},
        },
        "type": "object",
    },
}
VALID = {"type": ["boolean", "null"], "default": False}
SCHEMAS = {
    "cell_type_reference": {
        "definitions": {
            "CellTypeReference": {
                "required": ["cell_type", "classification_system", "target_id"],
                "properties": {
                    "cell_type": {"type": "string"},
                    "classification_system": {"type": "string"},
                    "target_id": {"type": "integer"},
                    "valid": VALID,
                },
                "type": "object",
            }
        },
        "$ref": "#/definitions/CellTypeReference",
    },
    "nucleus_detection": {
        "definitions": {
            **POINTS,
            "NucleusDetection": {
                "required": ["pt"],
                "properties": {
                    "bb_end": {"type": "object", "$ref": "#/definitions/SpatialPoint"},
                    "bb_start": {"type": "object", "$ref": "#/definitions/SpatialPoint"},
                    "pt": {"type": "object", "$ref": "#/definitions/BoundSpatialPoint"},
                    "valid": VALID,
                    "volume": {"type": "number", "format": "float"},
                },
                "type": "object",
            },
        },
        "$ref": "#/definitions/NucleusDetection",
    },
}
VIEWS = {
    "single_neurons": {"id": 5, "description": "Single neurons", "live_compatible": False},
    "soma_counts": {"id": 4, "description": "Counts", "live_compatible": False},
}
VIEW_SCHEMAS = {
    "single_neurons": {
        "id": {"type": "integer"},
        "pt_root_id": {"type": "integer"},
        "pt_position": {"type": "SpatialPoint"},
        "pt_supervoxel_id": {"type": "integer"},
    },
    "soma_counts": {
        "id": {"type": "integer"},
        "pt_position": {"type": "SpatialPoint"},
        "cell_type": {"type": "string"},
        "neuron_count": {"type": "integer"},
    },
}
JOIN_URL = f"{M3}/version/1/query"


@pytest.fixture
def server(rsps):
    mock_local_services(rsps)
    mock_versions(rsps, versions=[1])
    rsps.get(f"{M3}/version/1/tables/metadata", json=TABLES_METADATA)
    rsps.get(f"{SCHEMA}/types_all", json=SCHEMAS)
    rsps.get(f"{M3}/version/1/views", json=VIEWS)
    rsps.get(f"{M3}/version/1/views/schemas", json=VIEW_SCHEMAS)
    for meta in TABLES_METADATA:
        mock_table_metadata(rsps, meta.get("annotation_table") or meta["table_name"], meta)
    return rsps


@pytest.fixture
def client(server):
    return opencave_client()


@pytest.fixture
def tables(client) -> TableManager:
    return client.materialize.tables


def queries(rsps) -> list:
    return [c.request for c in rsps.calls if c.request.url.split("?")[0].endswith("/query")]


# -- the managers ----------------------------------------------------------------------------


def test_tables_manager(client, tables, server):
    assert len(tables) == 2
    assert tables.table_names == [REF, NUC]
    assert tables.find("COLUMN") == [REF]
    assert NUC in tables and "other" not in tables
    assert tables[REF] is getattr(tables, REF)
    assert repr(tables) == str([REF, NUC])
    html = tables._repr_html_()
    assert "<summary>allen_column_mtypes_v2</summary>" in html and "M-types &amp; more" in html
    assert tables._repr_mimebundle_() == ({"text/html": html}, {})
    server.calls.reset()
    assert client.materialize.tables is tables  # built once per version
    assert len(server.calls) == 0


def test_generated_classes(tables):
    nuc, ref = tables[NUC], tables[REF]
    assert nuc.__name__ == NUC and nuc.__doc__ == "Nucleus detections."
    assert nuc.fields == [
        "pt_root_id",
        "id",
        "volume",
        "pt_position_bbox",
        "bb_end_position_bbox",
        "bb_start_position_bbox",
    ]
    assert nuc.numeric_fields == ["volume"]
    assert nuc.spatial_fields == ["pt_position_bbox", "bb_end_position_bbox", "bb_start_position_bbox"]
    assert ref.fields == [
        "pt_root_id",
        "id",
        "volume",
        "id_ref",
        "cell_type",
        "classification_system",
        "target_id",
        "pt_position_bbox",
        "bb_end_position_bbox",
        "bb_start_position_bbox",
    ]
    assert ref.numeric_fields == ["volume", "target_id"]
    instance = ref()
    assert instance._base_table == NUC and instance._reference_table == REF
    assert instance.filter_kwargs_live == {} and instance.filter_kwargs_mat == {}


def test_reference_table_filters_and_join_body(tables, server):
    qry = tables[REF](pt_root_id=[123, 456], target_id=271700)
    assert qry.filter_kwargs_live == {
        "filter_equal_dict": {REF: {"target_id": 271700}},
        "filter_in_dict": {NUC: {"pt_root_id": [123, 456]}},
    }
    assert qry.filter_kwargs_mat is qry.filter_kwargs_live
    assert qry.joins_kwargs == {"joins": [[REF, "target_id", NUC, "id"]]}
    assert qry.basic_join == [[REF, "target_id"], [NUC, "id"]]
    expected = {
        "filter_in_dict": {NUC: {"pt_root_id": [123, 456]}},
        "filter_equal_dict": {REF: {"target_id": 271700}},
        "suffix_map": {REF: "_ref", NUC: ""},
        "tables": [[REF, "target_id"], [NUC, "id"]],
    }
    mock_query(server, JOIN_URL, pd.DataFrame(), body=expected)
    qry.query(metadata=False)
    assert queries(server)[0].url == f"{JOIN_URL}?{QUERY_STRING}"


def test_plain_table_filters(tables, server):
    box = [[0, 0, 0], [10, 10, 10]]
    qry = tables[NUC](pt_root_id=5, id=[], volume={">": 10, "<=": 20}, pt_position_bbox=box, bb_start_position_bbox=box)
    assert qry.filter_kwargs_live == {
        "filter_equal_dict": {NUC: {"pt_root_id": 5}},
        "filter_spatial_dict": {NUC: {"pt_position": box, "bb_start_position": box}},
        "filter_greater_dict": {NUC: {"volume": 10}},
        "filter_less_equal_dict": {NUC: {"volume": 20}},
    }
    assert qry.filter_kwargs_mat == {
        "filter_equal_dict": {"pt_root_id": 5},
        "filter_spatial_dict": {"pt_position": box, "bb_start_position": box},
        "filter_greater_dict": {"volume": 10},
        "filter_less_equal_dict": {"volume": 20},
    }
    assert qry.joins_kwargs == {"joins": None} and qry.basic_join is None
    mock_query(server, f"{M3}/version/1/table/{NUC}/query", pd.DataFrame({"id": [1]}))
    qry.query(limit=3, metadata=False)
    assert request_json(queries(server)[0]) == {
        "filter_equal_dict": {NUC: {"pt_root_id": 5}},
        "filter_greater_dict": {NUC: {"volume": 10}},
        "filter_less_equal_dict": {NUC: {"volume": 20}},
        "filter_spatial_dict": {NUC: {"pt_position": box, "bb_start_position": box}},
        "limit": 3,
    }


def test_value_kinds(tables):
    nuc = tables[NUC]
    assert nuc(id=np.array([1, 2])).filter_kwargs_mat["filter_in_dict"]["id"].tolist() == [1, 2]
    assert nuc(id=np.int64(3)).filter_kwargs_mat == {"filter_equal_dict": {"id": 3}}
    assert nuc(id=(1,)).filter_kwargs_mat == {"filter_in_dict": {"id": (1,)}}
    assert tables[REF](cell_type="BC").filter_kwargs_live == {"filter_equal_dict": {REF: {"cell_type": "BC"}}}
    assert tables[REF](id_ref=[7]).filter_kwargs_live == {"filter_in_dict": {REF: {"id": [7]}}}
    with pytest.raises(
        InvalidInequalityException, match=r"Cannot use inequality for non-numeric fields: \['cell_type'\]"
    ):
        tables[REF](cell_type={"<": "C"})
    with pytest.raises(TypeError):
        nuc(not_a_column=1)


def test_every_renamed_keyword_maps_back():
    """caveclient keeps only the last rename of a table; every one is kept here."""
    base = {
        "$ref": "#/definitions/B",
        "definitions": {"B": {"properties": {"size": {"type": "integer"}, "tag": {"type": "string"}}}},
    }
    ref = {
        "$ref": "#/definitions/R",
        "definitions": {
            "R": {
                "properties": {"size": {"type": "integer"}, "tag": {"type": "string"}, "target_id": {"type": "integer"}}
            }
        },
    }

    class FakeClient:
        materialize = None

    metadata = [
        {"table_name": "b", "schema": "base", "reference_table": None},
        {"table_name": "r", "schema": "ref", "reference_table": "b"},
    ]
    manager = TableManager(FakeClient(), metadata, {"base": base, "ref": ref})
    qry = manager.r(id_ref=[1], size_ref={">": 3}, tag_ref="x", size=4)
    assert qry.filter_kwargs_live == {
        "filter_equal_dict": {"r": {"tag": "x"}, "b": {"size": 4}},
        "filter_in_dict": {"r": {"id": [1]}},
        "filter_greater_dict": {"r": {"size": 3}},
    }
    assert "size_ref" in manager.r.numeric_fields


def test_reference_table_with_timestamp_queries_live(tables, server):
    when = datetime(2024, 6, 6, tzinfo=UTC)
    mock_query(server, f"{M3}/query", pd.DataFrame({"id": [1]}))
    tables[REF](target_id=5).query(timestamp=when, metadata=False)  # caveclient: TypeError
    assert request_json(queries(server)[0]) == {
        "table": REF,
        "timestamp": "2024-06-06T00:00:00+00:00",
        "join_tables": [[REF, "target_id", NUC, "id"]],
        "filter_equal_dict": {REF: {"target_id": 5}},
        "suffixes": {REF: "_ref", NUC: ""},
    }


def test_get_all_and_get_all_live(tables, server):
    mock_query(server, f"{M3}/query", pd.DataFrame({"id": [1]}))
    tables[NUC].get_all_live(datetime(2024, 6, 6, tzinfo=UTC), metadata=False, allow_missing_lookups=True)
    assert request_json(queries(server)[0]) == {"table": NUC, "timestamp": "2024-06-06T00:00:00+00:00"}
    assert "allow_missing_lookups=True" in queries(server)[0].url
    mock_query(server, f"{M3}/version/1/table/{NUC}/query", pd.DataFrame({"id": [1]}))
    assert tables[NUC].get_all(metadata=False).id.tolist() == [1]


def test_views(client, server):
    views = client.materialize.views
    assert views.table_names == ["single_neurons", "soma_counts"]
    assert views.find("single") == ["single_neurons"]
    cls = views.single_neurons
    assert cls.fields == ["id", "pt_root_id", "pt_supervoxel_id", "pt_position_bbox"]
    assert cls.spatial_fields == ["pt_position_bbox"] and not hasattr(cls, "get_all_live")
    box = [[0, 0, 0], [1, 1, 1]]
    qry = cls(pt_root_id=[123, 456], pt_position_bbox=box)
    assert 123 in qry.filter_kwargs_mat["filter_in_dict"]["pt_root_id"]
    assert qry.filter_kwargs_mat["filter_spatial_dict"] == {"pt_position": box}
    server.get(f"{M3}/version/1/views/single_neurons/metadata", json={"id": 5, "voxel_resolution_x": 4.0})
    mock_query(server, f"{M3}/version/1/views/single_neurons/query", pd.DataFrame({"id": [1]}))
    qry.query(limit=2)
    assert request_json(queries(server)[0]) == {
        "filter_in_dict": {"single_neurons": {"pt_root_id": [123, 456]}},
        "filter_spatial_dict": {"single_neurons": {"pt_position": box}},
        "limit": 2,
    }
    server.calls.reset()
    client.materialize.views  # noqa: B018  (fetched again, as in caveclient)
    assert len(server.calls) == 2


def test_view_manager_fetches_missing_metadata(client, server):
    manager = ViewManager(client)
    assert manager.table_names == ["single_neurons", "soma_counts"]


def test_tables_follow_the_version(client, server):
    first = client.materialize.tables
    mock_versions(server, versions=[1, 2])
    server.get(f"{M3}/version/2/tables/metadata", json=TABLES_METADATA[1:])
    client.version = 2
    assert client.materialize.tables is not first
    assert client.materialize.tables.table_names == [NUC]


def test_tables_interface_on_api_2(server):
    server.upsert(responses.GET, f"{MAT}/api/versions", json=[2])
    mock_versions(server, versions=[1], api=2)
    server.get(f"{M2}/version/1/tables", json=[NUC])
    mock_table_metadata(server, NUC, {**TABLES_METADATA[1], "table_name": NUC}, api=2)
    tables = opencave_client().materialize.tables  # caveclient fails here (API 3 gate)
    assert tables.table_names == [NUC]


def test_schemas_fetched_one_by_one_without_types_all(server):
    server.replace(responses.GET, f"{SCHEMA}/types_all", status=404)
    server.get(f"{SCHEMA}/type/nucleus_detection", json=SCHEMAS["nucleus_detection"])
    server.get(f"{SCHEMA}/type/cell_type_reference", json=SCHEMAS["cell_type_reference"])
    tables = opencave_client().materialize.tables
    assert tables.table_names == [REF, NUC]
    assert tables[REF].fields[-4] == "target_id"


def test_a_broken_table_is_left_out(server, caplog):
    server.replace(
        responses.GET,
        f"{M3}/version/1/tables/metadata",
        json=[*TABLES_METADATA, {"table_name": "odd", "schema": "nope"}],
    )
    server.get(f"{SCHEMA}/type/nope", status=404)
    tables = opencave_client().materialize.tables
    assert tables.table_names == [REF, NUC]
    assert "odd" in caplog.text


def test_old_server_query_fails_with_the_gate_message(server):
    server.upsert(responses.GET, f"{MAT}/version", json="4.13.0")
    tables = opencave_client().materialize.tables
    with pytest.raises(ServerIncompatibilityError, match="5.13.0"):
        tables[REF](pt_root_id=[123, 456], target_id=271700).query()


def test_schema_columns():
    columns = schema_columns(SCHEMAS["nucleus_detection"])
    assert columns.bound_points == ["pt"] and columns.unbound_points == ["bb_end", "bb_start"]
    assert columns.values == ["id"] and columns.numeric == ["volume"]


@pytest.mark.parametrize(
    ("table", "kwargs"),
    [
        (REF, {"pt_root_id": [123, 456], "target_id": 271700}),
        (REF, {"cell_type": "BC", "volume": {">": 1, "<": 9}, "pt_position_bbox": [[0, 0, 0], [1, 1, 1]]}),
        (REF, {"id_ref": 4}),
        (NUC, {"pt_root_id": np.array([1, 2]), "volume": {">=": 3}, "id": []}),
        (NUC, {"bb_end_position_bbox": [[0, 0, 0], [2, 2, 2]], "id": 3}),
    ],
)
def test_filters_equal_caveclient(server, table, kwargs):
    ours = opencave_client().materialize.tables[table]
    theirs = genuine_client().materialize.tables[table]
    assert ours.fields == theirs.fields
    assert ours.numeric_fields == theirs.numeric_fields
    assert ours.spatial_fields == theirs.spatial_fields
    a, b = ours(**kwargs), theirs(**kwargs)
    for attribute in ("filter_kwargs_live", "filter_kwargs_mat", "joins_kwargs", "basic_join"):
        assert repr(getattr(a, attribute)) == repr(getattr(b, attribute)) or _same(
            getattr(a, attribute), getattr(b, attribute)
        )


def _same(ours, theirs) -> bool:
    """Equal up to dict order (caveclient iterates a set of tables)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(_same(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, np.ndarray) or isinstance(theirs, np.ndarray):
        return np.array_equal(ours, theirs)
    return ours == theirs


def test_join_query_body_equals_caveclient(server):
    mock_query(server, JOIN_URL, pd.DataFrame())
    opencave_client().materialize.tables[REF](pt_root_id=[1], target_id=2).query(metadata=False)
    genuine_client().materialize.tables[REF](pt_root_id=[1], target_id=2).query(metadata=False)
    ours, theirs = queries(server)
    assert ours.url == theirs.url and request_json(ours) == request_json(theirs)
