"""The annotation engine over HTTP: the genuine caveclient 8.2.1 drives every annotation method
against ``opencave serve`` (SQLite and PostgreSQL); bad input gets clear 4xx JSON answers;
table permissions hold for a second user."""

from __future__ import annotations

import logging
import uuid

import pandas as pd
import pytest
import requests
from caveclient import CAVEclient

DS = AV = "opencave_demo"
BASE = f"/annotation/api/v2/aligned_volume/{AV}/table"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def client(server, admin_token) -> CAVEclient:
    return CAVEclient(DS, server_address=server.url, auth_token=admin_token)


@pytest.fixture(scope="module")
def http(server, admin_token):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin_token}"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, server.url + path, **kwargs)

    return call


@pytest.fixture(scope="module")
def users(server):
    """Two plain users (besides the admin): a teammate of the owner and a stranger, with tokens."""
    team = unique("team")
    server.cli("group", "add", team)
    made = {}
    for role in ("owner", "friend", "stranger"):
        email = f"{unique(role)}@example.org"
        server.cli("user", "add", email)
        if role != "stranger":
            server.cli("group", "add-user", team, email)
        made[role] = CAVEclient(DS, server_address=server.url, auth_token=server.new_token(email))
    return made


def _error(response: requests.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == status and body["message"]
    for word in words:
        assert word.lower() in body["message"].lower(), body["message"]
    return body


def synapse(pre, post, size=1.0) -> dict:
    return {"pre_pt": {"position": pre}, "post_pt": {"position": post}, "ctr_pt": {"position": [1, 1, 1]}, "size": size}


def create(client: CAVEclient, schema: str = "synapse", **kw) -> str:
    name = unique(schema)
    response = client.annotation.create_table(name, schema, "a test table", kw.pop("voxel_resolution", [8, 8, 40]), **kw)
    assert response.status_code == 200 and response.text == name
    return name


# -- the genuine client ---------------------------------------------------------------------------
def test_table_lifecycle(client, caplog):
    name = create(client, notice_text="Please cite the demo.")
    assert name in client.annotation.get_tables()
    with caplog.at_level(logging.WARNING):
        meta = client.annotation.get_table_metadata(name)
    assert "Table Owner Notice: Please cite the demo." in caplog.text
    assert meta["voxel_resolution"] == [8.0, 8.0, 40.0] and meta["table_name"] == name
    assert meta["schema_type"] == "synapse" and meta["notice_text"] == "Please cite the demo."
    assert meta["read_permission"] == "PUBLIC" and meta["write_permission"] == "PRIVATE"
    assert len(meta["created"]) == len("2024-06-05T10:10:01.203215")
    updated = client.annotation.update_metadata(name, description="better words", read_permission="GROUP", notice_text="none")
    assert updated["description"] == "better words" and updated["read_permission"] == "GROUP" and updated["notice_text"] is None
    assert client.annotation.get_annotation_count(name) == 0
    assert client.annotation.delete_table(name) is True
    assert name not in client.annotation.get_tables()


def test_annotations_round_trip(client):
    name = create(client, voxel_resolution=[4, 4, 40])
    ids = client.annotation.post_annotation(name, [synapse([10, 20, 5], [300, 40, 6], 2.0), synapse([30, 40, 7], [50, 60, 8])])
    assert ids == [1, 2]
    frame = pd.DataFrame(
        {
            "pre_pt_position": [[1, 2, 3], [4, 5, 6]],
            "post_pt_position": [[7, 8, 9], [10, 11, 12]],
            "ctr_pt_position": [[1, 1, 1], [2, 2, 2]],
            "size": [5.0, 6.0],
        }
    )
    assert client.annotation.post_annotation_df(name, frame, position_columns=None) == [3, 4]
    single = client.annotation.post_annotation(name, synapse([1, 1, 1], [2, 2, 2]))
    assert single == [5]
    got = client.annotation.get_annotation(name, [1, 4])
    assert [g["id"] for g in got] == [1, 4]
    assert got[0]["pre_pt_position"] == [10, 20, 5] and got[0]["post_pt_position"] == [300, 40, 6]
    assert got[0]["size"] == 2.0 and got[0]["valid"] is True and got[0]["deleted"] is None
    assert client.annotation.get_annotation(name, 2)[0]["ctr_pt_position"] == [1, 1, 1]

    mapping = client.annotation.update_annotation(name, {"id": 1, **synapse([11, 21, 5], [300, 40, 6], 3.0)})
    assert mapping == {"1": 6}
    changed = pd.DataFrame({"id": [2], "pre_pt_position": [[9, 9, 9]], "post_pt_position": [[8, 8, 8]], "ctr_pt_position": [[1, 1, 1]], "size": [7.0]})
    assert client.annotation.update_annotation_df(name, changed, position_columns=["pre_pt_position", "post_pt_position", "ctr_pt_position"]) == {"2": 7}
    old, new = client.annotation.get_annotation(name, [1, 6])
    assert old["superceded_id"] == 6 and old["valid"] is False and old["deleted"] is not None
    assert new["pre_pt_position"] == [11, 21, 5] and new["size"] == 3.0

    assert client.annotation.delete_annotation(name, [3, 4]) == [3, 4]
    assert client.annotation.delete_annotation(name, 5) == [5]
    assert [a["valid"] for a in client.annotation.get_annotation(name, [3, 4, 5, 6, 7])] == [False, False, False, True, True]
    assert client.annotation.get_annotation_count(name) == 7  # every row ever written


def test_staged_annotations(client):
    name = create(client, "nucleus_detection")
    stage = client.annotation.stage_annotations(name)
    stage.add(pt_position=[100, 100, 10], volume=12.5)
    stage.add(pt_position=[101, 100, 10], volume=3.0, bb_start_position=[90, 90, 5], bb_end_position=[110, 110, 15])
    ids = client.annotation.upload_staged_annotations(stage, progress=False)
    assert ids == [1, 2] and len(stage.annotation_list_nonuploaded) == 0
    update = client.annotation.stage_annotations(name, update=True)
    update.add(id=2, pt_position=[102, 100, 10], volume=4.0)
    assert client.annotation.upload_staged_annotations(update, progress=False) == {"2": 3}
    row = client.annotation.get_annotation(name, 3)[0]
    assert row["pt_position"] == [102, 100, 10] and row["volume"] == 4.0
    assert row["bb_start_position"] == [90, 90, 5]  # fields left out keep their values…
    assert client.annotation.update_annotation(name, {"id": 3, "bb_start": None}) == {"3": 4}
    assert client.annotation.get_annotation(name, 4)[0]["bb_start_position"] is None  # …null clears them


def test_reference_table(client):
    target = create(client)
    ids = client.annotation.post_annotation(target, [synapse([1, 1, 1], [2, 2, 2])])
    tags = create(client, "reference_tag", reference_table=target, track_target_id_updates=True)
    assert client.annotation.get_table_metadata(tags)["reference_table"] == target
    assert client.annotation.post_annotation(tags, {"target_id": ids[0], "tag": "checked"}) == [1]
    with pytest.raises(requests.HTTPError, match="422"):
        client.annotation.post_annotation(tags, {"target_id": 999, "tag": "dangling"})


# -- bad input ------------------------------------------------------------------------------------
def test_unknown_tables_and_volumes(http):
    _error(http("GET", f"{BASE}/no_such_table"), 404, "no_such_table", "does not exist")
    _error(http("GET", f"{BASE}/no_such_table/count"), 404)
    _error(http("POST", f"{BASE}/no_such_table/annotations", json={"annotations": []}), 404)
    _error(http("GET", "/annotation/api/v2/aligned_volume/nowhere/table"), 404, "nowhere")


def test_bad_table_definitions(http):
    def post(**change):
        body = {"table_name": unique("t"), "schema_type": "synapse", "metadata": {"description": "d", "voxel_resolution_x": 8, "voxel_resolution_y": 8, "voxel_resolution_z": 40}}
        for key, value in change.items():
            if key in body:
                body[key] = value
            else:
                body["metadata"][key] = value
        return http("POST", BASE, json=body)

    _error(post(table_name="Has Spaces"), 400, "lowercase letters")
    _error(post(table_name=""), 400, "cannot be empty")
    _error(post(schema_type="synapses_please"), 400, "not a known annotation type")
    _error(post(voxel_resolution_z=None), 400, "voxel_resolution_z")
    _error(post(read_permission="ALL"), 400, "PUBLIC, GROUP or PRIVATE")
    _error(post(colour="blue"), 400, "colour")
    _error(post(description="nul\x00byte"), 400, "NUL")
    _error(post(user_id={"id": 1}), 400, "user_id")
    _error(post(schema_type="simple_reference"), 400, "reference_table")
    name = unique("dup")
    assert post(table_name=name).status_code == 200
    _error(post(table_name=name), 409, "already exists")
    _error(http("POST", BASE, data="{not json"), 400, "not valid JSON")
    _error(http("PUT", BASE, json={"metadata": {}}), 422, "table_name")


def test_rows_failing_validation_are_reported_and_nothing_is_inserted(client, http):
    name = create(client)
    rows = [synapse([1, 1, 1], [2, 2, 2]), {"pre_pt": {"position": "here"}, "ctr_pt": {"position": [1, 1, 1]}}, synapse([1, 1, 1], [2, 2, 2], "big")]
    body = _error(http("POST", f"{BASE}/{name}/annotations", json={"annotations": rows}), 422, "row 1", "nothing was written")
    errors = body["data"]["errors"]
    assert set(errors) == {"1", "2"}
    assert "three numbers" in errors["1"]["pre_pt.position"] and errors["1"]["post_pt"] == "Missing data for required field."
    assert "number" in errors["2"]["size"]
    assert client.annotation.get_annotation_count(name) == 0
    _error(http("POST", f"{BASE}/{name}/annotations", json={"rows": rows}), 400, "annotations")
    _error(http("POST", f"{BASE}/{name}/annotations", json={"annotations": "x"}), 400, "list")
    _error(http("GET", f"{BASE}/{name}/annotations", params={"annotation_ids": "1,b"}), 400, "integers")
    _error(http("GET", f"{BASE}/{name}/annotations"), 422, "annotation_ids")
    _error(http("GET", f"{BASE}/{name}/annotations", params={"annotation_ids": ""}), 422, "annotation_ids")
    _error(http("PUT", f"{BASE}/{name}/annotations", json={"annotations": [{"size": 2}]}), 422, "id")
    _error(http("PUT", f"{BASE}/{name}/annotations", json={"annotations": [{"id": 42, "size": 2}]}), 404, "not in table")
    _error(http("DELETE", f"{BASE}/{name}/annotations", json={"annotation_ids": [42]}), 404, "not in table")
    _error(http("DELETE", f"{BASE}/{name}/annotations", json={"annotation_ids": ["x"]}), 400, "integer")


def test_superseded_update_conflicts(client, http):
    name = create(client)
    [first] = client.annotation.post_annotation(name, synapse([1, 1, 1], [2, 2, 2]))
    new = client.annotation.update_annotation(name, {"id": first, "size": 4.0})[str(first)]
    body = _error(http("PUT", f"{BASE}/{name}/annotations", json={"annotations": [{"id": first, "size": 5.0}]}), 409, f"superseded by annotation ID {new}")
    assert body["data"]["superceded_id"] == new


def test_oversized_batch(client, http):
    name = create(client)
    _error(http("POST", f"{BASE}/{name}/annotations", json={"annotations": [synapse([1, 1, 1], [2, 2, 2])] * 10_001}), 413, "insertion limit is 10000")
    assert client.annotation.get_annotation_count(name) == 0


def test_position_outside_volume(client, http):
    name = create(client)  # 8 x 8 x 40 nm voxels: the demo volume is 256 x 256 x 64 of them
    body = _error(http("POST", f"{BASE}/{name}/annotations", json={"annotations": [synapse([1, 1, 1], [2, 2, 2]), synapse([1, 1, 64], [2, 2, 2])]}), 422, "row 1", "outside the volume")
    assert body["error"] == "position_outside_volume" and set(body["data"]["errors"]) == {"1"}
    assert client.annotation.get_annotation_count(name) == 0


def test_no_token(server):
    _error(requests.get(server.url + BASE), 401, "token")


def test_table_metadata_status_and_notice_header(client, http):
    name = create(client, notice_text="beta data — use with care")
    response = http("GET", f"{BASE}/{name}")
    assert response.status_code == 200
    assert response.headers["Warning"].startswith("Table Owner Notice: beta data")
    assert response.json()["table_name"] == name
    assert http("GET", f"{BASE}/{name}/annotations", params={"annotation_ids": "1"}).headers["Warning"]


# -- permissions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["PUBLIC", "GROUP", "PRIVATE"])
def test_table_permissions(users, level):
    owner, friend, stranger = users["owner"], users["friend"], users["stranger"]
    name = create(owner, read_permission=level, write_permission=level)
    [row] = owner.annotation.post_annotation(name, synapse([1, 1, 1], [2, 2, 2]))
    allowed = {"PUBLIC": {"friend", "stranger"}, "GROUP": {"friend"}, "PRIVATE": set()}[level]
    for who, client in (("friend", friend), ("stranger", stranger)):
        if who in allowed:
            assert client.annotation.get_annotation(name, row)[0]["id"] == row
            assert client.annotation.get_annotation_count(name) >= 1
            assert len(client.annotation.post_annotation(name, synapse([3, 3, 3], [4, 4, 4]))) == 1
        else:
            for attempt in (
                lambda: client.annotation.get_annotation(name, row),
                lambda: client.annotation.get_annotation_count(name),
                lambda: client.annotation.post_annotation(name, synapse([3, 3, 3], [4, 4, 4])),
                lambda: client.annotation.delete_annotation(name, [row]),
            ):
                with pytest.raises(requests.HTTPError, match="403"):
                    attempt()
        assert name in client.annotation.get_tables()  # listing and metadata are open to the dataset
        assert client.annotation.get_table_metadata(name)["table_name"] == name
        with pytest.raises(requests.HTTPError, match="403"):
            client.annotation.update_metadata(name, description="not yours")
        with pytest.raises(requests.HTTPError, match="403"):
            client.annotation.delete_table(name)
    assert owner.annotation.update_metadata(name, description="still mine")["description"] == "still mine"
