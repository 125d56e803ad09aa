"""``client.annotation``: exact requests (caveclient-spec §8.4), staging and uploading, and the
requests of the genuine caveclient 8.2.1 for the same calls."""

from __future__ import annotations

import json
from datetime import datetime

import jsonschema
import numpy as np
import pandas as pd
import pytest
import requests
import responses
from responses.matchers import json_params_matcher

from opencave import CAVEclient
from opencave.client.annotation import AnnotationClient
from opencave.client.auth import AuthClient
from opencave.client.errors import GlobalClientError
from opencave.client.stage import StagedAnnotations

from .helpers import LOCAL, SERVER, TOKEN
from .mat_mocks import ANNO, SCHEMA, genuine_client, mock_local_services, opencave_client, request_json

TABLE = "cell_type_test"
CELL_TYPE_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {
        "BoundSpatialPoint": {
            "type": "object",
            "properties": {
                "position": {"type": "array"},
                "root_id": {"type": "integer"},
                "supervoxel_id": {"type": "integer"},
            },
            "required": ["position"],
            "additionalProperties": False,
        },
        "CellTypeLocal": {
            "type": "object",
            "properties": {
                "cell_type": {"type": "string"},
                "classification_system": {"type": "string"},
                "pt": {"type": "object", "$ref": "#/definitions/BoundSpatialPoint"},
                "valid": {"type": ["boolean", "null"], "default": False},
            },
            "required": ["cell_type", "classification_system", "pt"],
            "additionalProperties": True,
        },
    },
    "$ref": "#/definitions/CellTypeLocal",
}
TABLE_META = {
    "flat_segmentation_source": None,
    "description": "Test table",
    "deleted": None,
    "created": "2022-01-12T20:36:00.492313",
    "table_name": TABLE,
    "id": 70,
    "reference_table": None,
    "user_id": "56",
    "valid": True,
    "schema_type": "cell_type_local",
    "voxel_resolution_x": 4.0,
    "voxel_resolution_y": 4.0,
    "voxel_resolution_z": 40.0,
}
GOOD = {"cell_type": "BC", "classification_system": "Exc", "pt_position": [1, 2, 3]}
GOOD_NESTED = {"cell_type": "BC", "classification_system": "Exc", "pt": {"position": [1, 2, 3]}}


@pytest.fixture
def server(rsps):
    mock_local_services(rsps)
    rsps.get(f"{ANNO}/table/{TABLE}", json=TABLE_META, status=201)  # the engine answers 201 here
    rsps.get(f"{SCHEMA}/type/cell_type_local", json=CELL_TYPE_SCHEMA)
    return rsps


@pytest.fixture
def client(server):
    return opencave_client()


@pytest.fixture
def anno(client, rsps) -> AnnotationClient:
    a = client.annotation
    rsps.calls.reset()
    return a


def last(rsps) -> requests.PreparedRequest:
    return rsps.calls[-1].request


def test_construction(client, rsps):
    rsps.calls.reset()
    a = client.annotation
    # Building annotation builds the schema client (its version probe), nothing else.
    assert [c.request.url for c in rsps.calls] == [f"{SERVER}/schema/versions"]
    assert client.annotation is a and a.fc is client
    assert a.aligned_volume_name == "test_volume"
    assert a.api_version == 2 and a.server_version is None
    assert a.server_address == LOCAL
    assert a.default_url_mapping == {"ae_server_address": LOCAL}


def test_global_client_has_no_annotation(rsps):
    with pytest.raises(GlobalClientError):
        CAVEclient(server_address=SERVER).annotation  # noqa: B018


def test_standalone_client_needs_a_schema_client_to_stage(rsps):
    a = AnnotationClient(server_address=LOCAL, aligned_volume_name="v", auth_client=AuthClient(token=TOKEN))
    with pytest.raises(ValueError, match="schema client"):
        a.stage_annotations(schema_name="cell_type_local")


def test_get_tables(anno, rsps):
    rsps.get(f"{ANNO}/table", json=["a", "b"])
    assert anno.get_tables() == ["a", "b"]
    assert last(rsps).url == f"{ANNO}/table"
    # caveclient refuses the timestamp (quirk 3); it is sent here.
    anno.get_tables(timestamp=datetime(2024, 6, 5, 10, 10, 1, 203215))
    assert last(rsps).url == f"{ANNO}/table?timestamp=2024-06-05T10%3A10%3A01.203215"
    rsps.get(f"{LOCAL}/annotation/api/v2/aligned_volume/other/table", json=[])
    anno.get_tables(aligned_volume_name="other")
    assert last(rsps).url == f"{LOCAL}/annotation/api/v2/aligned_volume/other/table"


def test_count_metadata_delete(anno, rsps):
    rsps.get(f"{ANNO}/table/{TABLE}/count", json=7)
    rsps.delete(f"{ANNO}/table/{TABLE}", json=True)
    assert anno.get_annotation_count(TABLE) == 7
    meta = anno.get_table_metadata(TABLE)
    assert meta["voxel_resolution"] == [4.0, 4.0, 40.0] and "voxel_resolution_x" not in meta
    assert meta["schema_type"] == "cell_type_local"
    assert anno.delete_table(TABLE) is True
    assert last(rsps).method == "DELETE"


def test_create_table(anno, rsps):
    rsps.post(f"{ANNO}/table", body=TABLE, content_type="text/html")
    response = anno.create_table(
        "new_refs",
        "cell_type_reference",
        "desc",
        [4, 4, 40],
        reference_table="nuclei",
        track_target_id_updates=True,
        flat_segmentation_source="precomputed://gs://x",
        user_id=5,
        notice_text="NONE",
        read_permission="GROUP",
    )
    assert isinstance(response, requests.Response) and response.text == TABLE
    assert last(rsps).headers["Content-Type"] == "application/json"
    assert request_json(last(rsps)) == {
        "schema_type": "cell_type_reference",
        "table_name": "new_refs",
        "metadata": {
            "description": "desc",
            "voxel_resolution_x": 4.0,
            "voxel_resolution_y": 4.0,
            "voxel_resolution_z": 40.0,
            "read_permission": "GROUP",
            "write_permission": "PRIVATE",
            "user_id": 5,
            "notice_text": "",
            "table_metadata": {"reference_table": "nuclei", "track_target_id_updates": True},
            "flat_segmentation_source": "precomputed://gs://x",
        },
    }
    anno.create_table("plain", "synapse", "d", [1, 1, 1])
    assert request_json(last(rsps))["metadata"] == {
        "description": "d",
        "voxel_resolution_x": 1.0,
        "voxel_resolution_y": 1.0,
        "voxel_resolution_z": 1.0,
        "read_permission": "PUBLIC",
        "write_permission": "PRIVATE",
    }
    with pytest.raises(ValueError, match="read_permission must be one of PRIVATE GROUP or PUBLIC"):
        anno.create_table("x", "synapse", "d", [1, 1, 1], read_permission="ALL")


def test_update_metadata(anno, rsps):
    expected = {"metadata": {"description": "a new description", "notice_text": ""}, "table_name": "test_table"}
    rsps.put(
        f"{ANNO}/table",
        json={"description": "a new description", "notice_text": None},
        match=[json_params_matcher(expected)],
    )
    result = anno.update_metadata("test_table", description="a new description", notice_text="None")
    assert result["notice_text"] is None
    with pytest.raises(ValueError, match="write_permission"):
        anno.update_metadata("test_table", write_permission="nobody")


def test_get_annotation(anno, rsps):
    rsps.get(f"{ANNO}/table/{TABLE}/annotations", json=[{"id": 1}])
    assert anno.get_annotation(TABLE, [1, 2, 3]) == [{"id": 1}]
    assert last(rsps).url == f"{ANNO}/table/{TABLE}/annotations?annotation_ids=1%2C2%2C3"
    anno.get_annotation(TABLE, np.int64(4))
    assert last(rsps).url.endswith("annotation_ids=4")


def test_post_update_delete(anno, rsps):
    url = f"{ANNO}/table/{TABLE}/annotations"
    rsps.post(url, json=[1])
    rsps.put(url, json={"1": 2})
    rsps.delete(url, json=[1])
    assert anno.post_annotation(TABLE, GOOD_NESTED) == [1]
    assert last(rsps).headers["Content-Type"] == "application/json"
    assert request_json(last(rsps)) == {"annotations": [GOOD_NESTED]}
    assert anno.update_annotation(TABLE, {"id": 1, **GOOD_NESTED}) == {"1": 2}
    assert last(rsps).method == "PUT"
    assert request_json(last(rsps)) == {"annotations": [{"id": 1, **GOOD_NESTED}]}
    anno.delete_annotation(TABLE, np.array([1, 2]))
    assert last(rsps).method == "DELETE" and last(rsps).headers["Content-Type"] == "application/json"
    assert request_json(last(rsps)) == {"annotation_ids": [1, 2]}
    anno.delete_annotation(TABLE, 5)
    assert request_json(last(rsps)) == {"annotation_ids": [5]}


def test_dataframe_uploads(anno, rsps):
    url = f"{ANNO}/table/{TABLE}/annotations"
    rsps.post(url, json=[1, 2])
    rsps.put(url, json={"1": 3})
    df = pd.DataFrame({"cell_type": ["BC", "MC"], "pt_position": [[1, 2, 3], [4, 5, 6]]})
    assert anno.post_annotation_df(TABLE, df, position_columns=None) == [1, 2]
    assert request_json(last(rsps)) == {
        "annotations": [
            {"cell_type": "BC", "pt": {"position": [1, 2, 3]}},
            {"cell_type": "MC", "pt": {"position": [4, 5, 6]}},
        ]
    }
    updates = pd.DataFrame({"id": [1], "kind": ["x"], "where": [np.array([7, 8, 9])]})
    anno.update_annotation_df(TABLE, updates, position_columns={"where": "pt"})
    assert request_json(last(rsps)) == {"annotations": [{"id": 1, "kind": "x", "pt": {"position": [7, 8, 9]}}]}


def test_process_position_columns():
    df = pd.DataFrame({"a": [1], "pre_pt_position": [[1, 2, 3]], "post_pt_position": [[4, 5, 6]]})
    by_list = AnnotationClient.process_position_columns(df, ["pre_pt_position"])
    assert by_list == [{"a": 1, "post_pt_position": [4, 5, 6], "pre_pt": {"position": [1, 2, 3]}}]
    by_index = AnnotationClient.process_position_columns(df, df.columns[1:])
    assert by_index[0]["post_pt"] == {"position": [4, 5, 6]}
    assert AnnotationClient.process_position_columns(df, None) == by_index
    with pytest.raises(ValueError, match="position_columns must be a list, dict or None"):
        AnnotationClient.process_position_columns(df, "pre_pt_position")


# -- staging (caveclient-spec §8.4, §10.1) ----------------------------------------------------


def test_stage_from_table_and_upload(anno, rsps):
    stage = anno.stage_annotations(TABLE)
    assert isinstance(stage, StagedAnnotations)
    assert stage._table_resolution == [4.0, 4.0, 40.0] and stage.table_name == TABLE
    assert [c.request.url for c in rsps.calls] == [f"{ANNO}/table/{TABLE}", f"{SCHEMA}/type/cell_type_local"]
    stage.add(**GOOD)
    with pytest.raises(jsonschema.ValidationError):
        stage.add(cell_type="BC", classification_system="Exc", pt_position=32)
    assert len(stage) == 1
    assert stage.annotation_list == [GOOD_NESTED]

    rsps.post(
        f"{ANNO}/table/{TABLE}/annotations", json=[1], match=[json_params_matcher({"annotations": [GOOD_NESTED]})]
    )
    assert anno.upload_staged_annotations(stage, progress=False) == [1]
    assert stage.annotation_list_nonuploaded == []
    assert getattr(stage._anno_list[0], stage.IS_UPLOADED_FIELD) is True
    assert getattr(stage._anno_list[0], stage.UPLOADED_ID_FIELD) == 1
    assert anno.upload_staged_annotations(stage, progress=False) == []  # nothing left to send


def test_update_stage(anno, rsps):
    stage = anno.stage_annotations(TABLE, update=True)
    with pytest.raises(TypeError):
        stage.add(**GOOD)  # no id
    stage.add(id=1000, **GOOD)
    rsps.put(
        f"{ANNO}/table/{TABLE}/annotations",
        json={"1000": 1001},
        match=[json_params_matcher({"annotations": [{"id": 1000, **GOOD_NESTED}]})],
    )
    assert anno.upload_staged_annotations(stage, progress=False) == {"1000": 1001}
    assert stage.annotation_dataframe(include_tracking=True)["new_id"].tolist() == [1001]


def test_schema_stage_needs_a_table_name(anno, rsps):
    stage = anno.stage_annotations(schema_name="cell_type_local")
    assert stage.name == "cell_type_local" and stage.table_name is None
    stage.add(**GOOD)
    with pytest.raises(ValueError, match="specified table name"):
        anno.upload_staged_annotations(stage)
    with pytest.raises(ValueError, match="Must specify either table name or schema name"):
        anno.stage_annotations()
    stage.table_name = TABLE
    rsps.post(f"{ANNO}/table/{TABLE}/annotations", json=[5])
    assert anno.upload_staged_annotations(stage, progress=False) == [5]


def test_upload_in_batches(anno, rsps):
    stage = anno.stage_annotations(TABLE)
    stage.add(**GOOD)
    stage.add(cell_type="IN", classification_system="Inh", pt_position=[4, 5, 6])
    url = f"{ANNO}/table/{TABLE}/annotations"
    rsps.post(url, json=[10], match=[json_params_matcher({"annotations": [GOOD_NESTED]})])
    second = {"cell_type": "IN", "classification_system": "Inh", "pt": {"position": [4, 5, 6]}}
    rsps.post(url, json=[11], match=[json_params_matcher({"annotations": [second]})])
    assert anno.upload_staged_annotations(stage, batch_size=1, progress=False) == [10, 11]
    assert [getattr(a, stage.UPLOADED_ID_FIELD) for a in stage._anno_list] == [10, 11]


def test_upload_retries_then_raises(anno, rsps, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("opencave.client.annotation.time.sleep", sleeps.append)
    stage = anno.stage_annotations(TABLE)
    stage.add(**GOOD)
    url = f"{ANNO}/table/{TABLE}/annotations"
    rsps.post(url, status=409, json={"message": "busy"})
    with pytest.raises(requests.HTTPError, match="409"):
        anno.upload_staged_annotations(stage, progress=False, retries=3)
    assert sleeps == [2, 4]
    assert len([c for c in rsps.calls if c.request.method == "POST"]) == 3
    assert stage.annotation_list_nonuploaded == [GOOD_NESTED]

    rsps.replace(responses.POST, url, json=[9])
    assert anno.upload_staged_annotations(stage, progress=False, retries=0) == [9]  # still one attempt


def test_wrong_id_count_is_not_retried(anno, rsps, monkeypatch):
    monkeypatch.setattr("opencave.client.annotation.time.sleep", lambda s: None)
    stage = anno.stage_annotations(TABLE)
    stage.add(**GOOD)
    rsps.post(f"{ANNO}/table/{TABLE}/annotations", json=[1, 2])
    with pytest.raises(AssertionError, match="2 ids for batch of size 1"):
        anno.upload_staged_annotations(stage, progress=False)
    assert len([c for c in rsps.calls if c.request.method == "POST"]) == 1


def test_requests_equal_caveclient(server):
    """The same calls through caveclient send the same URLs and bodies."""
    url = f"{ANNO}/table/{TABLE}/annotations"
    server.post(url, json=[1])
    server.put(url, json={"1": 2})
    server.delete(url, json=[1])
    server.get(url, json=[])
    server.post(f"{ANNO}/table", body="ok")
    server.put(f"{ANNO}/table", json={})

    def exercise(a) -> None:
        a.post_annotation(TABLE, GOOD_NESTED)
        a.post_annotation_df(TABLE, pd.DataFrame({"x": [np.int64(1)], "pt_position": [np.array([1, 2, 3])]}), None)
        a.update_annotation(TABLE, [{"id": 1, **GOOD_NESTED}])
        a.delete_annotation(TABLE, [1, 2])
        a.get_annotation(TABLE, [3, 4])
        a.create_table("t", "synapse", "d", [4, 4, 40], reference_table="r", notice_text="hi")
        a.update_metadata("t", description="d", read_permission="PUBLIC", user_id=3)

    def sent(start: int) -> list[tuple[str, str, str | None]]:
        requests_ = [c.request for c in server.calls[start:] if "/annotation/" in c.request.url]
        bodies = [r.body.decode() if isinstance(r.body, bytes) else r.body for r in requests_]
        return [(r.method, r.url, json.loads(b) if b else None) for r, b in zip(requests_, bodies)]

    ours = opencave_client().annotation
    start = len(server.calls)
    exercise(ours)
    ours_sent = sent(start)
    theirs = genuine_client().annotation
    start = len(server.calls)
    exercise(theirs)
    assert ours_sent == sent(start)
    assert ours.get_table_metadata(TABLE) == theirs.get_table_metadata(TABLE)
    assert ours.process_position_columns(
        pd.DataFrame({"pt_position": [[1, 2, 3]]}), None
    ) == theirs.process_position_columns(pd.DataFrame({"pt_position": [[1, 2, 3]]}), None)
