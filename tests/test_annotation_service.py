"""The annotation engine as a service, on SQLite and PostgreSQL: tables, copy-on-write rows,
history reads, supervoxel lookups, validation per row, table permissions, bulk loads."""

from __future__ import annotations

import math
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from opencave.config import resolve_settings
from opencave.demo.registration import DEMO_ALIGNED_VOLUME, DEMO_GRAPH_TABLE, register_demo
from opencave.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from opencave.runtime import Runtime
from opencave.services.annotation import MAX_INSERT, AnnotationsInvalid, row_layout
from opencave.services.annotation.bulk import BULK_CHUNK
from opencave.services.auth import Identity

AV = DEMO_ALIGNED_VOLUME
OWNER = "1"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def runtime(request, tmp_path_factory, database_for):
    """A store with the demo datastack and its proofread graph (no generated annotations)."""
    opened = Runtime.open(resolve_settings(str(tmp_path_factory.mktemp("anno") / "data"), database_for(request.param)))
    opened.access.seed_permissions()
    opened.accounts.create_user("admin@localhost", "admin", admin=True, password="x" * 12)
    register_demo(opened.access, opened.info, opened.settings.viewer_site)
    opened._ensure_demo_graph()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def svc(runtime):
    return runtime.annotations


@pytest.fixture(scope="module")
def volume(runtime):
    return runtime.graphs.graph(DEMO_GRAPH_TABLE).volume


@pytest.fixture(scope="module")
def voxels(volume):
    """Watershed voxels inside supervoxels (first rows) and in the background."""
    labels = volume.cutout((0, 0, 0), volume.size)
    inside = np.argwhere(labels != 0)
    outside = np.argwhere(labels == 0)
    rng = np.random.default_rng(1)
    return inside[rng.choice(len(inside), 50, replace=False)], outside[rng.choice(len(outside), 5, replace=False)]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def make(svc, schema="synapse", resolution=(8, 8, 40), **kw) -> str:
    name = unique(schema)
    svc.create_table(AV, name, schema, description="a test table", voxel_resolution=list(resolution), user_id=OWNER, **kw)
    return name


def synapse(pre, post, size=1.0, **extra) -> dict:
    return {"pre_pt": {"position": list(map(float, pre))}, "post_pt": {"position": list(map(float, post))}, "ctr_pt": {"position": [1, 1, 1]}, "size": size, **extra}


# -- tables -------------------------------------------------------------------------------------
def test_create_table_and_metadata(svc):
    name = make(svc, notice_text="cite us")
    meta = svc.table_metadata(AV, name)
    assert meta["table_name"] == name and meta["schema_type"] == "synapse" and meta["user_id"] == OWNER
    assert (meta["voxel_resolution_x"], meta["voxel_resolution_y"], meta["voxel_resolution_z"]) == (8.0, 8.0, 40.0)
    assert meta["read_permission"] == "PUBLIC" and meta["write_permission"] == "PRIVATE"
    assert meta["valid"] is True and meta["deleted"] is None and meta["notice_text"] == "cite us"
    assert meta["pcg_table_name"] == DEMO_GRAPH_TABLE and meta["annotation_table"] == name
    created = datetime.strptime(meta["created"], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60
    assert name in svc.table_names(AV)
    assert name in [m["table_name"] for m in svc.tables_metadata(AV)]
    assert svc.count(AV, name) == 0
    reference = make(svc, "simple_reference", reference_table=name)
    assert svc.table_metadata(AV, reference)["pcg_table_name"] is None  # nothing to look up


@pytest.mark.parametrize(
    "change, error, words",
    [
        ({"table_name": ""}, BadRequest, "cannot be empty"),
        ({"table_name": "Bad-Name"}, BadRequest, "lowercase letters"),
        ({"table_name": "1abc"}, BadRequest, "invalid table name"),
        ({"table_name": "___"}, BadRequest, "at least one letter"),
        ({"schema_type": "no_such_schema"}, BadRequest, "not a known annotation type"),
        ({"description": "  "}, BadRequest, "description"),
        ({"voxel_resolution": [4, 4]}, BadRequest, "three numbers"),
        ({"voxel_resolution": [4, 0, 40]}, BadRequest, "positive"),
        ({"read_permission": "EVERYONE"}, BadRequest, "PUBLIC, GROUP or PRIVATE"),
        ({"schema_type": "simple_reference"}, BadRequest, "reference_table"),
        ({"reference_table": "whatever"}, BadRequest, "not a reference schema"),
        ({"schema_type": "simple_reference", "reference_table": "no_such_table"}, BadRequest, "No table named"),
        ({"aligned_volume": "no_such_volume"}, NotFound, "no_such_volume"),
    ],
)
def test_create_table_rejects_bad_input(svc, change, error, words):
    args = {"aligned_volume": AV, "table_name": unique("bad"), "schema_type": "synapse", "description": "d", "voxel_resolution": [8, 8, 40]}
    args.update(change)
    with pytest.raises(error) as caught:
        svc.create_table(args.pop("aligned_volume"), args.pop("table_name"), args.pop("schema_type"), user_id=OWNER, **args)
    assert words.lower() in caught.value.message.lower()


def test_reference_to_itself_and_duplicates(svc):
    name = make(svc)
    with pytest.raises(Conflict, match="already exists"):
        svc.create_table(AV, name, "synapse", description="d", voxel_resolution=[8, 8, 40], user_id=OWNER)
    with pytest.raises(BadRequest, match="itself"):
        svc.create_table(AV, "selfish", "simple_reference", description="d", voxel_resolution=[8, 8, 40], user_id=OWNER, reference_table="selfish")


def test_update_metadata_and_soft_delete(svc):
    name = make(svc, notice_text="old notice")
    between = datetime.now(UTC)
    with pytest.raises(Forbidden, match="not the owner"):
        svc.update_table_metadata(AV, name, "999", description="mine now")
    meta = svc.update_table_metadata(AV, name, OWNER, description="new text", read_permission="group", notice_text="NONE")
    assert meta["description"] == "new text" and meta["read_permission"] == "GROUP" and meta["notice_text"] is None
    assert svc.update_table_metadata(AV, name, "999", admin=True, owner=7)["user_id"] == "7"
    with pytest.raises(BadRequest, match="Cannot update"):
        svc.update_table_metadata(AV, name, "7", voxel_resolution=[1, 1, 1])
    ids = svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2])])
    with pytest.raises(Forbidden):
        svc.delete_table(AV, name, OWNER)
    svc.delete_table(AV, name, "7")
    assert name not in svc.table_names(AV)
    assert name in svc.table_names(AV, include_deleted=True)
    assert name in svc.table_names(AV, timestamp=between)
    assert name not in svc.table_names(AV, timestamp=between - timedelta(seconds=60))
    with pytest.raises(NotFound, match="was deleted"):
        svc.table_metadata(AV, name)
    assert svc.table_metadata(AV, name, include_deleted=True)["deleted"] is not None
    with pytest.raises(NotFound):
        svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2])])
    assert svc.read_rows(AV, name)["id"].to_pylist() == ids  # rows stay readable for old versions
    with pytest.raises(Conflict, match="deleted"):
        svc.create_table(AV, name, "synapse", description="d", voxel_resolution=[8, 8, 40], user_id=OWNER)


# -- rows ---------------------------------------------------------------------------------------
def test_insert_get_and_supervoxels(svc, volume, voxels):
    inside, background = voxels
    name = make(svc, resolution=(4, 4, 40))  # table voxels are half the watershed's in x and y
    pre = inside[:3] * [2, 2, 1]
    post = np.vstack([inside[3:5] * [2, 2, 1], background[:1] * [2, 2, 1]])
    before = time.time()
    ids = svc.insert(AV, name, [synapse(a, b, size=i) for i, (a, b) in enumerate(zip(pre, post))])
    assert ids == [1, 2, 3]
    got = svc.get(AV, name, [3, 1, 99])
    assert [g["id"] for g in got] == [1, 3]
    first = got[0]
    assert first["pre_pt_position"] == [int(v) for v in pre[0]] and first["valid"] is True
    assert first["deleted"] is None and first["superceded_id"] is None and first["size"] == 0.0
    assert "pre_pt_supervoxel_id" not in first and "pre_pt_root_id" not in first
    created = datetime.strptime(first["created"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
    assert before - 1 <= created <= time.time() + 1
    rows = svc.read_rows(AV, name)
    expected_pre = volume.supervoxels_at(inside[:3]).astype(np.int64)
    expected_post = np.append(volume.supervoxels_at(inside[3:5]).astype(np.int64), 0)
    assert rows["pre_pt_supervoxel_id"].to_pylist() == expected_pre.tolist()
    assert rows["post_pt_supervoxel_id"].to_pylist() == expected_post.tolist()
    assert all(rows["pre_pt_supervoxel_id"].to_pylist())  # inside supervoxels
    assert svc.count(AV, name) == 3


def test_read_rows_schema(svc):
    name = make(svc, "nucleus_detection")
    svc.insert(AV, name, [{"pt": {"position": [10, 10, 10]}, "volume": 2.5}, {"pt": {"position": [11, 10, 10]}, "bb_start": {"position": [1, 2, 3]}}])
    table = svc.read_rows(AV, name)
    assert table.schema == row_layout("nucleus_detection").arrow_schema
    assert table.column_names[:5] == ["id", "created", "deleted", "superceded_id", "valid"]
    assert "pt_root_id" not in table.column_names and "pt_position_x" in table.column_names
    assert table["valid"].type == pa.bool_() and table["valid"].to_pylist() == [True, True]
    assert all(math.isnan(v) for v in table["deleted"].to_pylist())
    assert table["bb_start_position_x"].to_pylist() == [None, 1.0]
    assert table["volume"].to_pylist() == [2.5, None]
    empty = svc.read_rows(AV, name, ids=[12345])
    assert empty.num_rows == 0 and empty.schema == table.schema


def test_explicit_ids_advance_the_sequence(svc):
    name = make(svc)
    assert svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2], id=100), synapse([1, 1, 1], [2, 2, 2])]) == [100, 101]
    assert svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2])]) == [102]
    assert svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2], id=5)]) == [5]
    with pytest.raises(Conflict, match="already exist"):
        svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2], id=100)])
    with pytest.raises(AnnotationsInvalid, match="twice"):
        svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2], id=7), synapse([1, 1, 1], [2, 2, 2], id=7)])
    assert svc.count(AV, name) == 4


def test_invalid_rows_are_reported_per_row_and_nothing_is_written(svc):
    name = make(svc)
    rows = [
        synapse([1, 1, 1], [2, 2, 2]),
        {"pre_pt": {"position": [1, 2]}, "post_pt": {"position": [1, 1, 1]}, "ctr_pt": {"position": [1, 1, 1]}},
        {"post_pt": {"position": [1, 1, 1]}, "ctr_pt": {"position": [1, 1, 1]}, "size": "big"},
        "not an object",
        synapse([1, 1, 1], [2, 2, 2], unknown_key="is dropped"),
        synapse([1e10, 1, 1], [2, 2, 2]),
        synapse([1, 1, 1], [2, float("nan"), 2]),
    ]
    with pytest.raises(AnnotationsInvalid) as caught:
        svc.insert(AV, name, rows)
    error = caught.value
    assert error.status == 422
    errors = error.data["errors"]
    assert set(errors) == {"1", "2", "3", "5", "6"}
    assert "three numbers" in errors["1"]["pre_pt.position"]
    assert "2147483647" in errors["5"]["pre_pt.position"] and "finite" in errors["6"]["post_pt.position"]
    assert errors["2"]["pre_pt"] == "Missing data for required field." and "number" in errors["2"]["size"]
    assert "row 1" in error.message and "nothing was written" in error.message
    assert svc.count(AV, name) == 0
    assert svc.insert(AV, name, [rows[0], rows[4]]) == [1, 2]


def test_types_choices_and_valid_rules(svc):
    plastic = make(svc, "plastic_synapse")
    bad = synapse([1, 1, 1], [2, 2, 2], plasticity=9)
    with pytest.raises(AnnotationsInvalid, match=r"one of \[0, 1, 2, 3, 4\]"):
        svc.insert(AV, plastic, [bad])
    same_root = synapse([1, 1, 1], [2, 2, 2], plasticity=1)
    same_root["pre_pt"]["root_id"] = same_root["post_pt"]["root_id"] = 5  # accepted, not stored
    ids = svc.insert(AV, plastic, [same_root, synapse([1, 1, 1], [2, 2, 2], plasticity=2.0)])
    assert [r["valid"] for r in svc.get(AV, plastic, ids)] == [False, True]  # synapse rule: distinct roots
    cells = make(svc, "cell_type_local")
    ids = svc.insert(
        AV,
        cells,
        [
            {"pt": {"position": [5, 5, 5]}, "classification_system": "valence", "cell_type": "e", "valid": False},
            {"pt": {"position": [5, 5, 5]}, "classification_system": "valence", "cell_type": "martian"},
            {"pt": {"position": [5, 5, 5]}, "classification_system": "my_own", "cell_type": "anything"},
        ],
    )
    assert [r["valid"] for r in svc.get(AV, cells, ids)] == [True, False, True]
    with pytest.raises(AnnotationsInvalid, match="integer"):
        svc.insert(AV, make(svc, "bound_tag_user"), [{"pt": {"position": [1, 1, 1]}, "tag": "x", "user_id": 1.5}])
    with pytest.raises(AnnotationsInvalid, match="NUL"):
        svc.insert(AV, make(svc, "bound_tag"), [{"pt": {"position": [1, 1, 1]}, "tag": "a\x00b"}])
    tags = make(svc, "bound_tag")
    ids = svc.insert(AV, tags, [{"pt": {"position": [1, 1, 1]}, "tag": "ünïcödé ✓", "id": "12"}])
    assert ids == [12] and svc.get(AV, tags, ids)[0]["tag"] == "ünïcödé ✓"


def test_positions_outside_the_volume(svc):
    name = make(svc, resolution=(4, 4, 40))
    with pytest.raises(AnnotationsInvalid) as caught:
        svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2]), synapse([10, 10, 1], [512, 10, 1])])
    assert caught.value.code == "position_outside_volume"
    assert set(caught.value.data["errors"]) == {"1"}
    assert "outside the volume" in caught.value.data["errors"]["1"]["post_pt.position"]
    assert "512" in caught.value.message
    ids = svc.insert(AV, name, [synapse([1, 1, 1], [510, 10, 1], ctr_pt={"position": [-5, 9999, 1]})])  # unbound points are free
    assert ids == [1]


def test_insert_limit(svc):
    name = make(svc)
    with pytest.raises(PayloadTooLarge, match="insertion limit is 10000"):
        svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2])] * (MAX_INSERT + 1))
    assert svc.insert(AV, name, []) == []


def test_update_is_copy_on_write(svc):
    name = make(svc)
    ids = svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2], size=1), synapse([3, 3, 3], [4, 4, 4], size=2)])
    t_before = time.time()
    time.sleep(0.01)
    mapping = svc.update(AV, name, [{"id": ids[0], "size": 10.0}])
    new = mapping[ids[0]]
    assert new == 3
    old_row, new_row = svc.get(AV, name, [ids[0], new])
    assert old_row["superceded_id"] == new and old_row["valid"] is False and old_row["deleted"] is not None
    assert new_row["size"] == 10.0 and new_row["pre_pt_position"] == [1, 1, 1] and new_row["valid"] is True
    with pytest.raises(Conflict, match=f"already been superseded by annotation ID {new}"):
        svc.update(AV, name, [{"id": ids[0], "size": 3.0}])
    with pytest.raises(NotFound, match="not in table"):
        svc.update(AV, name, [{"id": 999, "size": 3.0}])
    with pytest.raises(AnnotationsInvalid, match="'id'"):
        svc.update(AV, name, [{"size": 3.0}])
    with pytest.raises(AnnotationsInvalid, match="size"):
        svc.update(AV, name, [{"id": ids[1], "size": "huge"}])
    assert svc.count(AV, name) == 3
    alive_before = svc.read_rows(AV, name, alive_at=t_before)["id"].to_pylist()
    assert alive_before == ids
    assert svc.read_rows(AV, name, alive_at=time.time())["id"].to_pylist() == [ids[1], new]
    changed = svc.read_rows(AV, name, changed_between=(t_before, time.time()))["id"].to_pylist()
    assert changed == [ids[0], new]


def test_delete_is_soft(svc):
    name = make(svc)
    ids = svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2]) for _ in range(3)])
    moment = datetime.now(UTC) + timedelta(seconds=5)
    assert svc.delete(AV, name, [ids[0], ids[1], 777], timestamp=moment) == ids[:2]
    assert svc.delete(AV, name, [ids[0]]) == []  # already deleted: left as it was
    rows = svc.get(AV, name, ids)
    assert [r["valid"] for r in rows] == [False, False, True]
    assert rows[0]["deleted"].startswith(moment.strftime("%Y-%m-%d %H:%M:%S"))
    assert svc.read_rows(AV, name, alive_at=moment.timestamp() - 1).num_rows == 3
    assert svc.read_rows(AV, name, alive_at=moment.timestamp())["id"].to_pylist() == [ids[2]]
    with pytest.raises(NotFound, match="not in table"):
        svc.delete(AV, name, [12345])
    with pytest.raises(Conflict, match="deleted"):
        svc.update(AV, name, [{"id": ids[0], "size": 2.0}])
    assert svc.count(AV, name) == 3


def test_reference_tables(svc):
    target = make(svc)
    follower = make(svc, "reference_tag", reference_table=target, track_target_id_updates=True)
    static = make(svc, "reference_tag", reference_table=target)
    ids = svc.insert(AV, target, [synapse([1, 1, 1], [2, 2, 2]), synapse([3, 3, 3], [4, 4, 4])])
    with pytest.raises(AnnotationsInvalid) as caught:
        svc.insert(AV, follower, [{"target_id": ids[0], "tag": "ok"}, {"target_id": 999, "tag": "dangling"}])
    assert set(caught.value.data["errors"]) == {"1"}
    tag_ids = svc.insert(AV, follower, [{"target_id": ids[0], "tag": "a"}, {"target_id": ids[1], "tag": "b"}])
    svc.insert(AV, static, [{"target_id": ids[0], "tag": "a"}])
    new = svc.update(AV, target, [{"id": ids[0], "size": 5.0}])[ids[0]]
    alive = svc.read_rows(AV, follower, alive_at=time.time()).to_pylist()
    assert sorted((r["target_id"], r["tag"]) for r in alive) == [(ids[1], "b"), (new, "a")]
    old = svc.get(AV, follower, [tag_ids[0]])[0]
    assert old["valid"] is False and old["superceded_id"] not in (None, tag_ids[1])
    assert svc.read_rows(AV, static)["target_id"].to_pylist() == [ids[0]]  # not tracking


def test_concurrent_inserts_keep_the_sequence(svc):
    name = make(svc)
    results: list[list[int]] = []
    errors: list[Exception] = []

    def work():
        try:
            for _ in range(5):
                results.append(svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2])] * 20))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ids = sorted(i for batch in results for i in batch)
    assert ids == list(range(1, 401))
    assert svc.count(AV, name) == 400


# -- permissions --------------------------------------------------------------------------------
def test_table_permissions(runtime, svc):
    accounts = runtime.accounts
    owner = accounts.create_user(f"{unique('owner')}@example.org", "owner")
    friend = accounts.create_user(f"{unique('friend')}@example.org", "friend")
    stranger = accounts.create_user(f"{unique('stranger')}@example.org", "stranger")
    team = unique("team")
    accounts.create_group(team)
    for user in (owner, friend):
        accounts.add_member(team, user.email)
    ident = {u: runtime.identities.identity_for_user(u.id) for u in (owner, friend, stranger)}
    admin = Identity(id=0, name="root", email="root@x", admin=True)
    for level in ("PUBLIC", "GROUP", "PRIVATE"):
        name = unique(level.lower())
        svc.create_table(
            AV, name, "synapse", description="d", voxel_resolution=[8, 8, 40], user_id=str(owner.id), read_permission=level, write_permission=level
        )
        allowed = {"PUBLIC": {owner, friend, stranger}, "GROUP": {owner, friend}, "PRIVATE": {owner}}[level]
        for user, identity in ident.items():
            for action in ("read", "write"):
                if user in allowed:
                    svc.authorize(AV, name, identity, action)
                else:
                    with pytest.raises(Forbidden):
                        svc.authorize(AV, name, identity, action)
        svc.authorize(AV, name, admin, "write")
        with pytest.raises(Forbidden, match="not the owner"):
            svc.authorize(AV, name, ident[friend], "own")


# -- bulk ---------------------------------------------------------------------------------------
def test_insert_columns_and_read_rows(svc, volume, voxels):
    inside, _ = voxels
    name = make(svc, "cell_type_local")
    n = BULK_CHUNK * 2 + 17  # several chunks, indexes rebuilt after the load
    rng = np.random.default_rng(0)
    positions = inside[rng.integers(0, len(inside), n)].astype(float)
    created = 1.7e9 + np.arange(n, dtype=float)
    deleted = np.where(np.arange(n) % 10 == 0, created + 5.5, np.nan)
    types = np.array(["e", "i", "martian"], dtype=object)[np.arange(n) % 3]
    seen = []
    ids = svc.insert_columns(
        AV,
        name,
        {"pt_position": positions, "classification_system": np.full(n, "valence", dtype=object), "cell_type": types},
        created=created,
        deleted=deleted,
        progress=seen.append,
    )
    assert ids.tolist() == list(range(1, n + 1)) and seen[-1] == n
    table = svc.read_rows(AV, name)
    assert table.num_rows == n and table.schema == row_layout("cell_type_local").arrow_schema
    assert np.array_equal(table["pt_supervoxel_id"].to_numpy(), volume.supervoxels_at(positions).astype(np.int64))
    assert np.array_equal(table["created"].to_numpy(), created)
    assert np.array_equal(np.isnan(table["deleted"].to_numpy()), np.isnan(deleted))
    assert table["valid"].to_numpy(zero_copy_only=False).tolist() == np.isnan(deleted).tolist()
    assert svc.insert(AV, name, [{"pt": {"position": [1, 1, 1]}, "classification_system": "x", "cell_type": "y"}]) == [n + 1]
    t = 1.7e9 + 100.0
    alive = svc.read_rows(AV, name, alive_at=t)
    expected = (created <= t) & (np.isnan(deleted) | (deleted > t))
    assert alive["id"].to_pylist() == ids[expected].tolist()
    window = svc.read_rows(AV, name, changed_between=(1.7e9 + 10, 1.7e9 + 20.5))
    changed = ((created > 1.7e9 + 10) & (created <= 1.7e9 + 20.5)) | ((deleted > 1.7e9 + 10) & (deleted <= 1.7e9 + 20.5))
    assert window["id"].to_pylist() == ids[changed].tolist()
    assert svc.read_rows(AV, name, ids=ids[:5].tolist() + [10**9])["id"].to_pylist() == ids[:5].tolist()


def test_insert_columns_rejects_bad_columns(svc):
    name = make(svc)
    n = 3
    good = {"pre_pt_position": np.ones((n, 3)), "post_pt_position": np.ones((n, 3)), "ctr_pt_position": np.ones((n, 3))}
    created = np.full(n, time.time())
    with pytest.raises(BadRequest, match="Missing required columns"):
        svc.insert_columns(AV, name, {"pre_pt_position": np.ones((n, 3))}, created=created)
    with pytest.raises(BadRequest, match="Unknown columns"):
        svc.insert_columns(AV, name, {**good, "colour": np.ones(n)}, created=created)
    outside = dict(good, post_pt_position=np.array([[1, 1, 1], [1, 1, 1], [300, 1, 1]], dtype=float))
    with pytest.raises(BadRequest, match=r"outside the volume.*first: 2"):
        svc.insert_columns(AV, name, outside, created=created)
    huge = dict(good, ctr_pt_position=np.array([[1, 1, 1], [1e10, 1, 1], [1, 1, 1]], dtype=float))
    with pytest.raises(BadRequest, match=r"beyond .*first: 1"):
        svc.insert_columns(AV, name, huge, created=created)
    with pytest.raises(BadRequest, match="before created"):
        svc.insert_columns(AV, name, good, created=created, deleted=created - 1)
    assert svc.count(AV, name) == 0
    ids = svc.insert_columns(AV, name, {**good, "id": np.array([10, 11, 12])}, created=created)
    assert ids.tolist() == [10, 11, 12]
    assert svc.insert(AV, name, [synapse([1, 1, 1], [2, 2, 2])]) == [13]
    with pytest.raises(BadRequest, match="at least 14"):
        svc.insert_columns(AV, name, {**good, "id": np.array([1, 2, 3])}, created=created)


def test_unknown_tables_and_volumes(svc):
    with pytest.raises(NotFound, match="does not exist"):
        svc.insert(AV, "no_such_table", [])
    with pytest.raises(NotFound, match="no_such_volume"):
        svc.table_names("no_such_volume")
    with pytest.raises(NotFound):
        svc.get("no_such_volume", "t", [1])
    assert svc.segmentation_of(AV) == DEMO_GRAPH_TABLE
