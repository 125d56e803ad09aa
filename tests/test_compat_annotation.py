"""The annotation engine through both clients: the genuine caveclient 8.2.1 and opencave's
client each run the same sequence — create tables, post (dicts and DataFrames), read, update,
delete, count, stage and upload, change metadata, query the table live, delete the tables — on
their own freshly created tables, against the same ``opencave serve``. Every step's outcome
(result or error, and the warnings logged) must be the same once table names, table ids and
timestamps are normalised.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import caveclient
import numpy as np
import pandas as pd
import pytest
import requests

import opencave
from tests.support.compare import both, outcome, same

DS = "opencave_demo"
METADATA_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
ROW_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


@pytest.fixture(scope="module")
def pair(server, admin_token):
    return (
        caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
        opencave.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
    )


class Recorder(logging.Handler):
    """Collects the messages logged (WARNING and up) while a step runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def point(x: float, y: float, z: float) -> dict[str, list[float]]:
    return {"position": [x, y, z]}


def synapse(pre, post, ctr, size) -> dict[str, Any]:
    return {"pre_pt": point(*pre), "post_pt": point(*post), "ctr_pt": point(*ctr), "size": size}


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pre_pt_position": [[80, 90, 20], [81, 91, 21]],
            "post_pt_position": [[82, 90, 20], [83, 91, 21]],
            "ctr_pt_position": [[81, 90, 20], [82, 91, 21]],
            "size": [1.0, 2.0],
        }
    )


def stage_state(stage) -> dict[str, Any]:
    return {
        "repr": repr(stage),
        "len": len(stage),
        "fields": stage.fields,
        "fields_required": stage.fields_required,
        "is_update": stage.is_update,
        "annotation_list": stage.annotation_list,
        "nonuploaded": stage.annotation_list_nonuploaded,
        "frame": stage.annotation_dataframe(),
        "tracking": stage.annotation_dataframe(include_tracking=True),
        "pending": stage.annotation_dataframe(only_nonuploaded=True),
    }


def scenario(client, table: str) -> list[tuple[str, Any, list[str]]]:
    """Run the sequence on ``table`` (and ``<table>_ref``); each step's outcome and the
    warnings it logged."""
    ann = client.annotation
    ref = f"{table}_ref"
    steps: list[tuple[str, Any, list[str]]] = []
    context: dict[str, Any] = {}

    def step(name: str, call: Callable[[], Any]) -> Any:
        recorder = Recorder()
        root = logging.getLogger()
        root.addHandler(recorder)
        try:
            result = outcome(lambda _: call(), None)
        finally:
            root.removeHandler(recorder)
        steps.append((name, result, recorder.messages))
        return result

    def create(*args, **kwargs):
        response = ann.create_table(*args, **kwargs)
        assert isinstance(response, requests.Response)
        return response.status_code, response.text, response.headers.get("Content-Type")

    step("listed before", lambda: table in ann.get_tables())
    step(
        "create",
        lambda: create(
            table, "synapse", "Synapses of the compat test", voxel_resolution=[8, 8, 40], write_permission="PUBLIC", notice_text="Work in progress"
        ),
    )
    step(
        "create reference",
        lambda: create(
            ref, "cell_type_reference", "Cell types of the compat test", voxel_resolution=[4, 4, 40], reference_table=table, track_target_id_updates=True
        ),
    )
    step("create again", lambda: create(table, "synapse", "again", voxel_resolution=[8, 8, 40]))
    step("create bad permission", lambda: create(f"{table}_x", "synapse", "x", voxel_resolution=[8, 8, 40], read_permission="WORLD"))
    step("create unknown schema", lambda: create(f"{table}_y", "no_such_schema", "y", voxel_resolution=[8, 8, 40]))
    step("create reference without target", lambda: create(f"{table}_z", "cell_type_reference", "z", voxel_resolution=[8, 8, 40]))
    step("listed", lambda: (table in ann.get_tables(), ref in ann.get_tables(), f"{table}_x" in ann.get_tables()))
    step("metadata", lambda: ann.get_table_metadata(table))
    step("metadata reference", lambda: ann.get_table_metadata(ref))
    step("count empty", lambda: ann.get_annotation_count(table))
    step(
        "post list",
        lambda: ann.post_annotation(
            table, [synapse((60, 60, 20), (62, 60, 20), (61, 60, 20), 10.0), synapse((100, 100, 30), (101, 100, 30), (100, 100, 30), 20)]
        ),
    )
    step("post one", lambda: ann.post_annotation(table, synapse((70, 80, 25), (71, 80, 25), (70, 80, 25), 5.5)))
    step("post numpy", lambda: ann.post_annotation(table, synapse(np.array([72, 80, 25]), (73, 80, 25), (72, 80, 25), np.float64(7.0))))
    step("post df", lambda: ann.post_annotation_df(table, frame(), position_columns=None))
    step("post df list", lambda: ann.post_annotation_df(table, frame(), position_columns=["pre_pt_position", "post_pt_position", "ctr_pt_position"]))
    renamed = frame().rename(columns={"pre_pt_position": "a", "post_pt_position": "b", "ctr_pt_position": "c"})
    step("post df dict", lambda: ann.post_annotation_df(table, renamed, position_columns={"a": "pre_pt", "b": "post_pt", "c": "ctr_pt"}))
    step("post df bad columns", lambda: ann.post_annotation_df(table, frame(), position_columns="pre_pt_position"))
    step("post invalid", lambda: ann.post_annotation(table, [synapse((1, 2, 3), (1, 2, 3), (1, 2, 3), 1.0), {"pre_pt": point(1, 2, 3), "size": "big"}]))
    step("post outside the volume", lambda: ann.post_annotation(table, synapse((10**6, 60, 20), (62, 60, 20), (61, 60, 20), 1.0)))
    step("get", lambda: ann.get_annotation(table, [1, 2, 3, 4, 5, 999]))
    step("get one", lambda: ann.get_annotation(table, 1))
    step("get numpy ids", lambda: ann.get_annotation(table, np.array([2, 3])))
    step("get unknown table", lambda: ann.get_annotation(f"{table}_none", [1]))
    step("update", lambda: ann.update_annotation(table, {"id": 1, "pre_pt": point(61, 61, 20), "post_pt": point(62, 61, 20), "ctr_pt": point(61, 61, 20), "size": 11.0}))
    step("update df", lambda: ann.update_annotation_df(table, frame().assign(id=[5, 6]), position_columns=None))
    step("update superseded", lambda: ann.update_annotation(table, {"id": 1, "size": 12.0}))
    step("delete", lambda: ann.delete_annotation(table, [2, 3]))
    step("delete again", lambda: ann.delete_annotation(table, 2))
    step("delete unknown", lambda: ann.delete_annotation(table, [999]))
    step("reference post", lambda: ann.post_annotation(ref, [{"target_id": 7, "classification_system": "aibs_coarse_excitatory", "cell_type": "23P"}]))
    step("reference bad target", lambda: ann.post_annotation(ref, [{"target_id": 999, "classification_system": "aibs_coarse_excitatory", "cell_type": "23P"}]))
    step("update target", lambda: ann.update_annotation(table, {"id": 7, "size": 8.0}))
    step("reference follows", lambda: ann.get_annotation(ref, [1, 2]))
    step("get all", lambda: ann.get_annotation(table, list(range(1, 20))))
    step("count", lambda: ann.get_annotation_count(table))

    def staged_new():
        stage = ann.stage_annotations(table, annotation_resolution=[4, 4, 40])
        stage.add(pre_pt_position=[120, 120, 20], post_pt_position=[124, 120, 20], ctr_pt_position=[122, 120, 20], size=3.0)
        stage.add(pre_pt_position=[130, 120, 20], post_pt_position=[134, 120, 20], ctr_pt_position=[132, 120, 20])
        stage.add_dataframe(
            pd.DataFrame({"pre_pt_position": [[140, 130, 21]], "post_pt_position": [[144, 130, 21]], "ctr_pt_position": [[142, 130, 21]], "size": [4.5]})
        )
        before = stage_state(stage)
        ids = ann.upload_staged_annotations(stage, progress=False)
        context["staged ids"] = ids
        return before, ids, stage_state(stage)

    step("stage and upload", staged_new)
    step("stage invalid", lambda: ann.stage_annotations(table).add(pre_pt_position=[1, 2, 3], post_pt_position=[1, 2, 3], ctr_pt_position=[1, 2, 3], size="big"))
    step("stage missing field", lambda: ann.stage_annotations(table).add(pre_pt_position=[1, 2, 3]))

    def staged_update():
        stage = ann.stage_annotations(table, update=True)
        first = context["staged ids"][0]
        stage.add(id=first, pre_pt_position=[60, 60, 20], post_pt_position=[62, 60, 20], ctr_pt_position=[61, 60, 20], size=30.0)
        before = stage_state(stage)
        result = ann.upload_staged_annotations(stage, progress=False)
        again = ann.upload_staged_annotations(stage, progress=False)  # nothing left to send
        return before, result, again, stage_state(stage)

    step("stage update", staged_update)

    def staged_schema():
        stage = ann.stage_annotations(schema_name="synapse", id_field=True)
        stage.add(id=100, pre_pt_position=[60, 70, 20], post_pt_position=[62, 70, 20], ctr_pt_position=[61, 70, 20], size=1.0)
        refused = outcome(lambda _: ann.upload_staged_annotations(stage, progress=False), None)
        stage.table_name = table
        return refused, stage_state(stage), ann.upload_staged_annotations(stage, progress=False, batch_size=1)

    step("stage by schema", staged_schema)
    step("stage neither", lambda: ann.stage_annotations())
    step("count after staging", lambda: ann.get_annotation_count(table))
    step("get staged", lambda: ann.get_annotation(table, [*context.get("staged ids", []), 100]))

    # the live table through the materialization engine (it is in no version: metadata=False)
    def live(**kwargs):
        return client.materialize.live_live_query(table, dt.datetime.now(dt.timezone.utc), metadata=False, **kwargs)

    step("live query", lambda: live())
    step("live query filtered", lambda: live(filter_greater_dict={table: {"size": 5}}, split_positions=True, desired_resolution=[4, 4, 40]))

    step("update metadata", lambda: ann.update_metadata(table, description="Synapses, reviewed", notice_text="none", read_permission="GROUP"))
    step("metadata updated", lambda: ann.get_table_metadata(table))
    step("update metadata bad permission", lambda: ann.update_metadata(table, write_permission="ALL"))
    step("update metadata notice", lambda: ann.update_metadata(table, notice_text="Frozen", flat_segmentation_source="precomputed://gs://bucket/seg"))
    step("metadata notice", lambda: ann.get_table_metadata(table))
    step("delete table with reference", lambda: ann.delete_table(ref))
    step("delete table", lambda: ann.delete_table(table))
    step("listed after", lambda: (table in ann.get_tables(), ref in ann.get_tables()))
    step("metadata deleted", lambda: ann.get_table_metadata(table))
    step("delete deleted", lambda: ann.delete_table(table))
    step("count deleted", lambda: ann.get_annotation_count(table))
    step("recreate deleted", lambda: create(table, "synapse", "again", voxel_resolution=[8, 8, 40]))
    return steps


def normalise(value: Any, names: dict[str, str]) -> Any:
    """Table names → placeholders, table ids and timestamps (checked for their format) →
    placeholders, recursively."""
    if isinstance(value, str):
        for name, placeholder in names.items():
            value = value.replace(name, placeholder)
        if METADATA_TIME.match(value):
            return "<metadata time>"
        if ROW_TIME.match(value):
            return "<row time>"
        return re.sub(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{6}", "<time>", value)
    if isinstance(value, BaseException):
        return type(value), normalise(" ".join(str(value).split()), names)
    if isinstance(value, pd.DataFrame):
        return value
    if isinstance(value, dict):
        out = {key: normalise(item, names) for key, item in value.items()}
        if "schema_type" in value and "table_name" in value and isinstance(value.get("id"), int):
            out["id"] = "<table id>"
        return out
    if isinstance(value, list):
        return [normalise(item, names) for item in value]
    if isinstance(value, tuple):
        return tuple(normalise(item, names) for item in value)
    return value


# The steps of the scenario meant to fail: the error type and HTTP status (None: raised by
# the client before any request). Every other step must succeed.
SCENARIO_ERRORS: dict[str, tuple[str, int | None]] = {
    "count deleted": ("HTTPError", 404),
    "create again": ("HTTPError", 409),
    "create bad permission": ("ValueError", None),
    "create reference without target": ("HTTPError", 400),
    "create unknown schema": ("HTTPError", 400),
    "delete deleted": ("HTTPError", 404),
    "delete unknown": ("HTTPError", 404),
    "get unknown table": ("HTTPError", 404),
    "metadata deleted": ("HTTPError", 404),
    "post df bad columns": ("ValueError", None),
    "post invalid": ("HTTPError", 422),
    "post outside the volume": ("HTTPError", 422),
    "recreate deleted": ("HTTPError", 409),
    "reference bad target": ("HTTPError", 422),
    "stage invalid": ("ValidationError", None),
    "stage missing field": ("TypeError", None),
    "stage neither": ("ValueError", None),
    "update metadata bad permission": ("ValueError", None),
    "update superseded": ("HTTPError", 409),
}


def test_annotation_sequence(pair):
    tag = uuid.uuid4().hex[:8]
    genuine_table, ours_table = f"compat_g_{tag}", f"compat_o_{tag}"
    genuine_steps = scenario(pair[0], genuine_table)
    ours_steps = scenario(pair[1], ours_table)
    assert [s[0] for s in genuine_steps] == [s[0] for s in ours_steps]
    for (name, genuine, genuine_log), (_, ours, ours_log) in zip(genuine_steps, ours_steps):
        expected = normalise(genuine, {genuine_table: "<T>"})
        actual = normalise(ours, {ours_table: "<T>"})
        try:
            same(expected, actual, name)
        except AssertionError as error:
            raise AssertionError(f"step {name!r}: caveclient {genuine!r}\n  opencave {ours!r}") from error
        assert normalise(genuine_log, {genuine_table: "<T>"}) == normalise(ours_log, {ours_table: "<T>"}), name
    outcomes = {name: result for name, result, _ in genuine_steps}
    # the steps meant to fail, and how (never a server error); no other step fails
    failed = {
        name: (type(result).__name__, getattr(getattr(result, "response", None), "status_code", None))
        for name, result in outcomes.items()
        if isinstance(result, BaseException)
    }
    assert failed == SCENARIO_ERRORS, "\n".join(f"{name!r}: {kind}," for name, kind in sorted(failed.items()))
    # the sequence did what it says (so that equal answers are not equal failures)
    assert outcomes["listed before"] is False
    assert outcomes["create"][:2] == (200, genuine_table)
    assert outcomes["listed"] == (True, True, False)
    assert outcomes["post list"] == [1, 2] and outcomes["post one"] == [3] and outcomes["post numpy"] == [4]
    assert outcomes["post df dict"] == [9, 10]
    assert isinstance(outcomes["post invalid"], requests.HTTPError) and outcomes["post invalid"].response.status_code == 422
    assert set(outcomes["update"]) == {"1"} and outcomes["delete"] == [2, 3]
    assert len(outcomes["stage and upload"][1]) == 3 and len(outcomes["stage update"][1]) == 1
    assert outcomes["stage by schema"][2] == [100]
    assert len(outcomes["live query"]) > 5 and outcomes["listed after"] == (False, False)
    assert outcomes["metadata notice"]["notice_text"] == "Frozen"


def test_tables_as_of_a_timestamp(pair):
    """``get_tables(timestamp=...)``: caveclient always refuses it (its version gate needs a
    server version the annotation engine never reports); opencave sends it (documented)."""
    genuine, ours = pair
    before = dt.datetime(2025, 1, 8, tzinfo=dt.timezone.utc)  # before proofreading_status
    with pytest.raises(caveclient.base.ServerIncompatibilityError):
        genuine.annotation.get_tables(timestamp=before)
    listed = ours.annotation.get_tables(timestamp=before)
    assert {"synapses", "nucleus_detection", "cell_types"} <= set(listed) and "proofreading_status" not in listed
    assert set(ours.annotation.get_tables()) == set(genuine.annotation.get_tables())


def test_queries_of_a_table_in_no_version(pair):
    """A new table is in no materialized version: live queries answer from the live store and
    take the table's metadata from the annotation engine; frozen queries fail alike."""
    table = f"compat_live_{uuid.uuid4().hex[:8]}"
    genuine = pair[0]
    genuine.annotation.create_table(table, "synapse", "live compat", voxel_resolution=[8, 8, 40])
    try:
        genuine.annotation.post_annotation(
            table, [synapse((60, 60, 20), (62, 60, 20), (61, 60, 20), 10.0), synapse((100, 100, 30), (101, 100, 30), (100, 100, 30), 20.0)]
        )
        genuine.annotation.delete_annotation(table, [1])
        ts = dt.datetime.now(dt.timezone.utc)
        rows = both(pair, lambda c: c.materialize.live_live_query(table, ts))
        assert rows["id"].tolist() == [2] and rows.attrs["table_name"] == table
        both(pair, lambda c: c.materialize.live_live_query(table, ts, split_positions=True, desired_resolution=[4, 4, 40]))
        # caveclient's live_query asks the nearest version for the table's metadata: not there
        both(pair, lambda c: c.materialize.live_query(table, ts), error=requests.HTTPError, status=404)
        both(pair, lambda c: c.materialize.query_table(table, timestamp=ts), error=requests.HTTPError, status=404)
        both(pair, lambda c: c.materialize.query_table(table), error=requests.HTTPError, status=404)
        both(pair, lambda c: c.materialize.get_table_metadata(table), error=requests.HTTPError, status=404)
    finally:
        genuine.annotation.delete_table(table)
