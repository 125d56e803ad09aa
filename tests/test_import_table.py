"""Importing rows into a live annotation table (``opencave import table`` and the upload endpoint).

Synapse rows at real positions of the demo world, taken from its synapse table through the API,
are posted through the API into one table and imported from CSV, CSV.gz, Parquet, Feather and the
static-export layout into others: the supervoxel and root ids a live query gives for them are the
same. Bad rows are named by file, row and column and leave the table as it was; a killed import
leaves no rows, and running it again imports each row once.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import requests

from opencave import CAVEclient

DS = "opencave_demo"
RESOLUTION = [4.0, 4.0, 40.0]  # half the demo synapses' x/y voxel size: positions are scaled on lookup
POINTS = ("pre_pt", "post_pt", "ctr_pt")
AXES = ("x", "y", "z")
SPLIT = [f"{p}_position_{a}" for p in POINTS for a in AXES]
COMPARED = ["id", "valid", "size", *[f"{p}_supervoxel_id" for p in ("pre_pt", "post_pt")], *[f"{p}_root_id" for p in ("pre_pt", "post_pt")], *SPLIT]
ROWS = 150


def client_for(server, token: str) -> CAVEclient:
    return CAVEclient(DS, server_address=server.url, auth_token=token)


@pytest.fixture(scope="module")
def admin(server, admin_token) -> CAVEclient:
    return client_for(server, admin_token)


@pytest.fixture(scope="module")
def rows(admin) -> pd.DataFrame:
    """Synapses at positions of the demo's own synapses (in 4×4×40 nm voxels, off the voxel grid
    of the demo's 8×8×40 table), with a size: split position columns, as files carry them."""
    demo = admin.materialize.query_table("synapses", limit=ROWS, split_positions=True).sort_values("id").reset_index(drop=True)
    out = pd.DataFrame({"size": demo["size"].astype(float) + 0.25})
    for point in POINTS:
        out[f"{point}_position_x"] = demo[f"{point}_position_x"] * 2 + 1.0
        out[f"{point}_position_y"] = demo[f"{point}_position_y"] * 2 + 0.5
        out[f"{point}_position_z"] = demo[f"{point}_position_z"].astype(float)
    return out[SPLIT + ["size"]]


def live(client: CAVEclient, table: str) -> pd.DataFrame:
    frame = client.materialize.live_live_query(table, dt.datetime.now(dt.timezone.utc), split_positions=True, desired_resolution=RESOLUTION)
    return frame.sort_values("id").reset_index(drop=True)[COMPARED]


@pytest.fixture(scope="module")
def posted(admin, rows) -> pd.DataFrame:
    """The rows posted through the API: what every import must give."""
    admin.annotation.create_table("posted_synapses", "synapse", "Synapses posted through the API.", voxel_resolution=RESOLUTION)
    nested = pd.DataFrame({"size": rows["size"]})
    for point in POINTS:
        nested[f"{point}_position"] = rows[[f"{point}_position_{a}" for a in AXES]].values.tolist()
    ids = admin.annotation.post_annotation_df("posted_synapses", nested, position_columns=[f"{p}_position" for p in POINTS])
    assert ids == list(range(1, ROWS + 1))
    frame = live(admin, "posted_synapses")
    assert len(frame) == ROWS and (frame["pre_pt_supervoxel_id"] > 0).all() and (frame["pre_pt_root_id"] > 0).all()
    return frame


def import_table(server, table: str, *files: Path | str, check: bool = True, schema: str = "synapse", datastack: str = DS, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = ["import", "table", datastack, table, *map(str, files), "--schema", schema, "--description", "Imported synapses.", "--voxel-resolution", *map(str, RESOLUTION), *extra]
    result = server.cli(*args, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, result.stderr
    return result


def count(client: CAVEclient, table: str) -> int:
    return client.annotation.get_annotation_count(table)


def write(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as the file ``path`` names: CSV (gzip-compressed for .csv.gz), Parquet or Feather."""
    if path.name.endswith((".csv", ".csv.gz")):
        frame.to_csv(path, index=False)
        return path
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if path.name.endswith(".parquet"):
        pq.write_table(table, path)
    else:
        feather.write_feather(table, path)
    return path


# -- the same ids as the API ---------------------------------------------------------------------
def test_genuine_caveclient_sees_imported_rows_as_the_rows_it_posted(server, admin_token, rows, tmp_path):
    """The wire check: caveclient 8.2.1 posts the rows itself, and reads them and the imported
    rows back with a live query: the same supervoxels, roots and positions."""
    import caveclient

    genuine = caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token)
    genuine.annotation.create_table("posted_by_caveclient", "synapse", "Synapses posted by caveclient.", voxel_resolution=RESOLUTION)
    nested = pd.DataFrame({"size": rows["size"]})
    for point in POINTS:
        nested[f"{point}_position"] = rows[[f"{point}_position_{a}" for a in AXES]].values.tolist()
    genuine.annotation.post_annotation_df("posted_by_caveclient", nested, position_columns=[f"{p}_position" for p in POINTS])
    import_table(server, "imported_for_caveclient", write(rows, tmp_path / "rows.parquet"))
    pd.testing.assert_frame_equal(live(genuine, "imported_for_caveclient"), live(genuine, "posted_by_caveclient"))


@pytest.mark.parametrize("suffix", ["csv", "csv.gz", "parquet", "feather"])
def test_imported_rows_equal_posted_rows(server, admin, rows, posted, tmp_path, suffix):
    table = "imported_" + suffix.replace(".", "_")
    half = ROWS // 2
    first = write(rows.iloc[:half], tmp_path / f"part1.{suffix}")
    second = write(rows.iloc[half:], tmp_path / f"part2.{suffix}")
    result = import_table(server, table, first, second)
    assert f"imported {ROWS:,} rows into new table {table}" in result.stdout
    pd.testing.assert_frame_equal(live(admin, table), posted)
    meta = admin.annotation.get_table_metadata(table)
    assert meta["schema_type"] == "synapse" and meta["description"] == "Imported synapses."
    assert list(meta["voxel_resolution"]) == RESOLUTION
    got = admin.annotation.get_annotation(table, [1, ROWS])
    want = admin.annotation.get_annotation("posted_synapses", [1, ROWS])
    assert [{k: v for k, v in r.items() if k not in ("created",)} for r in got] == [{k: v for k, v in r.items() if k not in ("created",)} for r in want]


def test_positions_as_one_column_and_renamed_columns(server, admin, rows, posted, tmp_path):
    frame = pd.DataFrame({"syn_size": rows["size"]})
    for point in POINTS:
        frame[f"{point}_position"] = rows[[f"{point}_position_{a}" for a in AXES]].values.tolist()
    path = write(frame, tmp_path / "lists.parquet")
    import_table(server, "imported_lists", path, extra=("--columns", "size=syn_size"))
    pd.testing.assert_frame_equal(live(admin, "imported_lists"), posted)
    text = frame.assign(**{f"{p}_position": frame[f"{p}_position"].map(json.dumps) for p in POINTS})
    import_table(server, "imported_list_text", write(text, tmp_path / "lists.csv"), extra=("--columns", "size=syn_size"))
    pd.testing.assert_frame_equal(live(admin, "imported_list_text"), posted)


def static_export(rows: pd.DataFrame, folder: Path) -> Path:
    """``rows`` as a static export: a headerless ``X.csv.gz`` beside ``X_header.csv``."""
    data, header = folder / "synapses_merged.csv.gz", folder / "synapses_merged_header.csv"
    header.write_text("".join(f"{c},double precision\n" for c in rows.columns))
    with gzip.open(data, "wt") as sink:
        for values in rows.itertuples(index=False):
            sink.write(",".join(repr(float(v)) for v in values) + "\n")
    return data


def test_static_export_layout(server, admin, rows, posted, tmp_path):
    import_table(server, "imported_static", static_export(rows, tmp_path))
    pd.testing.assert_frame_equal(live(admin, "imported_static"), posted)
    answer = admin.annotation.import_table("uploaded_static", static_export(rows, tmp_path), schema="synapse", description="d", voxel_resolution=RESOLUTION)
    assert answer["rows"] == ROWS  # the client sent the header file with it
    pd.testing.assert_frame_equal(live(admin, "uploaded_static"), posted)


def test_ids_given_by_the_file(server, admin, rows, tmp_path):
    frame = rows.iloc[:10].assign(id=range(1001, 1011))
    path = write(frame, tmp_path / "with_ids.csv")
    import_table(server, "imported_ids", path)
    assert [r["id"] for r in admin.annotation.get_annotation("imported_ids", [1001, 1010])] == [1001, 1010]
    again = import_table(server, "imported_ids", path, check=False)
    assert again.returncode != 0 and "with_ids.csv, row 1, column id" in again.stderr and "next free id" in again.stderr
    assert count(admin, "imported_ids") == 10
    admin.annotation.post_annotation("imported_ids", [{"pre_pt": {"position": [1, 1, 1]}, "post_pt": {"position": [1, 1, 1]}, "ctr_pt": {"position": [1, 1, 1]}, "size": 1.0}])
    assert count(admin, "imported_ids") == 11
    assert admin.annotation.get_annotation("imported_ids", [1011])[0]["id"] == 1011  # the sequence moved past the file's ids


def test_reference_table_and_valid_rule(server, admin, posted, tmp_path):
    """Rows of a reference schema point at rows of another table; ``valid`` follows the schema's
    rule (a cell type outside its classification system is not valid) as for posted rows."""
    labels = [
        {"target_id": 1, "classification_system": "valence", "cell_type": "e"},
        {"target_id": 2, "classification_system": "valence", "cell_type": "not_a_valence"},
        {"target_id": 3, "classification_system": "our_own_system", "cell_type": "anything"},
    ]
    admin.annotation.create_table("posted_labels", "cell_type_reference", "Labels.", voxel_resolution=RESOLUTION, reference_table="posted_synapses")
    admin.annotation.post_annotation("posted_labels", labels)
    path = write(pd.DataFrame(labels), tmp_path / "labels.csv")
    import_table(server, "imported_labels", path, schema="cell_type_reference", extra=("--reference-table", "posted_synapses"))
    want = [{k: v for k, v in r.items() if k != "created"} for r in admin.annotation.get_annotation("posted_labels", [1, 2, 3])]
    got = [{k: v for k, v in r.items() if k != "created"} for r in admin.annotation.get_annotation("imported_labels", [1, 2, 3])]
    assert got == want and [r["valid"] for r in got] == [True, False, True]
    unknown = write(pd.DataFrame([{"target_id": 10**6, "classification_system": "valence", "cell_type": "e"}]), tmp_path / "unknown.csv")
    message = rejected(server, admin, "imported_labels", unknown, schema="cell_type_reference")
    assert "unknown.csv, row 1, column target_id: no annotation 1000000 in table 'posted_synapses'" in message, message


# -- bad rows ------------------------------------------------------------------------------------
def with_bad_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows 3 (a size that is not a number) and 5 (a position outside the volume) are bad."""
    bad = rows.iloc[:8].astype({"size": object}).reset_index(drop=True)
    bad.loc[2, "size"] = "large"
    bad.loc[4, "pre_pt_position_x"] = 1e7
    return bad


def test_skip_leaves_bad_rows_out(server, admin, rows, tmp_path):
    path = write(with_bad_rows(rows), tmp_path / "some_bad.csv")
    result = import_table(server, "imported_skip", path, extra=("--on-error", "skip"))
    assert "imported 6 rows" in result.stdout and "2 bad rows skipped" in result.stdout, result.stdout
    assert "some_bad.csv, row 3, column size" in result.stderr and "some_bad.csv, row 5, column pre_pt_position" in result.stderr
    assert count(admin, "imported_skip") == 6


@pytest.fixture(scope="module")
def existing(server, admin, rows, tmp_path_factory) -> str:
    """A table holding ten rows, which rejected imports must leave as it is."""
    import_table(server, "imported_target", write(rows.iloc[:10], tmp_path_factory.mktemp("existing") / "ten.parquet"))
    return "imported_target"


def rejected(server, admin, table: str, *files, **options) -> str:
    before = count(admin, table)
    result = import_table(server, table, *files, check=False, **options)
    assert result.returncode != 0, result.stdout
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error:"), result.stderr
    assert count(admin, table) == before
    return message


def test_reject_names_file_row_and_column(server, admin, rows, existing, tmp_path):
    path = write(with_bad_rows(rows), tmp_path / "some_bad.csv")
    message = rejected(server, admin, existing, path)
    assert "2 row(s)" in message and "nothing was imported" in message, message
    assert "some_bad.csv, row 3, column size: is not a number (got 'large')" in message, message
    outside = rows.iloc[:8].reset_index(drop=True)
    outside.loc[6, "post_pt_position_z"] = -50.0
    message = rejected(server, admin, existing, write(outside, tmp_path / "outside.parquet"))
    assert "outside.parquet, row 7, column post_pt_position: position" in message and "outside the volume" in message, message


def test_reject_missing_column_unknown_schema_and_datastack(server, admin, rows, existing, tmp_path):
    path = write(rows.drop(columns=["post_pt_position_x", "post_pt_position_y", "post_pt_position_z"]), tmp_path / "no_post.csv")
    message = rejected(server, admin, existing, path)
    assert "no_post.csv" in message and "'post_pt_position_x'" in message and "requires" in message, message
    good = write(rows.iloc[:5], tmp_path / "good.csv")
    assert "not_a_schema" in rejected(server, admin, existing, good, schema="not_a_schema")
    assert "cell_type_local" in rejected(server, admin, existing, good, schema="cell_type_local")  # not the table's schema
    message = rejected(server, admin, existing, good, datastack="no_such_datastack")
    assert "no_such_datastack" in message, message
    missing = import_table(server, "never_created", tmp_path / "absent.csv", check=False)
    assert missing.returncode != 0 and "absent.csv: no such file" in missing.stderr
    assert "never_created" not in admin.annotation.get_tables()


def test_rejected_new_table_is_not_created(server, admin, rows, tmp_path):
    rejected_table = "imported_never"
    result = import_table(server, rejected_table, write(with_bad_rows(rows), tmp_path / "bad.csv.gz"), check=False)
    assert result.returncode != 0 and "bad.csv.gz, row 3, column size" in result.stderr
    assert rejected_table not in admin.annotation.get_tables()


# -- a killed import -------------------------------------------------------------------------------
def test_killed_import_leaves_no_rows(server, admin, rows, existing, tmp_path):
    big = pd.concat([rows] * (300_000 // ROWS), ignore_index=True)
    path = write(big, tmp_path / "big.parquet")
    before = count(admin, existing)
    command = [sys.executable, "-m", "opencave", "import", "table", DS, existing, str(path), "--schema", "synapse", *server.storage_args()]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:  # text mode: tqdm's carriage returns end lines too
            if "writing:" in line:  # the bar appears once the first 100,000 rows are in the open transaction
                break
        else:
            pytest.fail(f"the import ended before writing: {process.wait()}")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert count(admin, existing) == before
    abandoned = [d for d in (server.data_dir / "imports").iterdir() if d.name.startswith(f"{process.pid}-")]
    assert abandoned  # its staged files, removed by the next import
    result = import_table(server, existing, path)
    assert f"imported {len(big):,} rows" in result.stdout
    assert count(admin, existing) == before + len(big)
    assert not any(d.exists() for d in abandoned)


def test_killed_import_into_a_new_table_leaves_no_table(server, admin, rows, tmp_path):
    big = pd.concat([rows] * (300_000 // ROWS), ignore_index=True)
    path = write(big, tmp_path / "big.parquet")
    command = [sys.executable, "-m", "opencave", "import", "table", DS, "killed_new_table", str(path), "--schema", "synapse",
               "--description", "Imported synapses.", "--voxel-resolution", *map(str, RESOLUTION), *server.storage_args()]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if "writing:" in line:  # rows are in the open transaction that also creates the table
                break
        else:
            pytest.fail(f"the import ended before writing: {process.wait()}")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert "killed_new_table" not in admin.annotation.get_tables()
    result = import_table(server, "killed_new_table", path)
    assert f"imported {len(big):,} rows" in result.stdout
    assert count(admin, "killed_new_table") == len(big)


# -- the upload endpoint ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def users(server) -> dict[str, CAVEclient]:
    out = {}
    for name in ("owner", "other", "dataset_admin"):
        email = f"{name}-import@example.org"
        server.cli("user", "add", email)
        out[name] = client_for(server, server.new_token(email))
    server.cli("dataset", "admin", DS, "dataset_admin-import@example.org")
    return out


def test_upload_endpoint(server, admin, users, rows, posted, tmp_path):
    owner, other = users["owner"], users["other"]
    path = write(rows, tmp_path / "uploaded.parquet")
    answer = owner.annotation.import_table("uploaded", path, schema="synapse", description="Uploaded synapses.", voxel_resolution=RESOLUTION)
    assert answer["rows"] == ROWS and answer["skipped"] == 0 and answer["created_table"] and (answer["first_id"], answer["last_id"]) == (1, ROWS)
    me = requests.get(f"{server.url}/auth/api/v1/user/me", headers={"Authorization": f"Bearer {owner.auth.token}"}, timeout=60).json()
    assert str(admin.annotation.get_table_metadata("uploaded")["user_id"]) == str(me["id"])
    pd.testing.assert_frame_equal(live(admin, "uploaded"), posted)
    with pytest.raises(requests.HTTPError) as refused:
        other.annotation.import_table("uploaded", path, schema="synapse")
    assert refused.value.response.status_code == 403 and "owner" in refused.value.response.json()["message"]
    answer = admin.annotation.import_table("uploaded", path, schema="synapse")  # a superadmin may
    assert (answer["first_id"], answer["last_id"]) == (ROWS + 1, 2 * ROWS)
    answer = users["dataset_admin"].annotation.import_table("uploaded", path, schema="synapse")  # and an admin of the dataset
    assert (answer["first_id"], answer["last_id"]) == (2 * ROWS + 1, 3 * ROWS)
    with open(write(with_bad_rows(rows), tmp_path / "bad_upload.csv"), "rb") as handle:
        with pytest.raises(requests.HTTPError) as bad:
            owner.annotation.import_table("uploaded", handle, schema="synapse", file_name="bad_upload.csv")
    body = bad.value.response.json()
    assert bad.value.response.status_code == 400 and "bad_upload.csv, row 3, column size" in body["message"], body
    skipped = owner.annotation.import_table("uploaded", tmp_path / "bad_upload.csv", schema="synapse", on_error="skip")
    assert skipped["rows"] == 6 and skipped["skipped"] == 2 and any("row 5, column pre_pt_position" in p for p in skipped["problems"])
    assert count(admin, "uploaded") == 3 * ROWS + 6


def test_upload_endpoint_bad_requests(server, admin_token, users, rows, tmp_path):
    url = f"{server.url}/annotation/api/v2/aligned_volume/{DS}/table/upload_bad/import"
    headers = {"Authorization": f"Bearer {admin_token}"}
    good = write(rows.iloc[:5], tmp_path / "five.csv").read_bytes()
    cases = [
        ({"schema": "synapse", "file_name": "five.txt", "description": "d", "voxel_resolution": "4,4,40"}, good, "unknown format"),
        ({"schema": "synapse", "file_name": "five.csv", "voxel_resolution": "4,4,40"}, good, "description"),
        ({"schema": "synapse", "file_name": "five.csv", "description": "d"}, good, "voxel resolution"),
        ({"schema": "synapse", "file_name": "five.csv", "description": "d", "voxel_resolution": "4,4"}, good, "three numbers"),
        ({"schema": "synapse", "file_name": "../five.csv", "description": "d", "voxel_resolution": "4,4,40"}, good, "plain file name"),
        ({"schema": "synapse", "file_name": "five.parquet", "description": "d", "voxel_resolution": "4,4,40"}, good, "five.parquet"),
        ({"schema": "nope", "file_name": "five.csv", "description": "d", "voxel_resolution": "4,4,40"}, good, "nope"),
        ({"schema": "synapse", "file_name": "five.csv", "description": "d", "voxel_resolution": "4,4,40", "columns": "size"}, good, "NEW=OLD"),
        ({"schema": "synapse", "file_name": "five.csv.gz", "description": "d", "voxel_resolution": "4,4,40", "header": "a,b,c"}, good, "five_header.csv, line 1"),
        ({"schema": "synapse", "file_name": "five.parquet", "description": "d", "voxel_resolution": "4,4,40", "header": "a,integer"}, good, "static-export"),
    ]
    for params, body, words in cases:
        answer = requests.post(url, params=params, data=body, headers=headers, timeout=60)
        assert answer.status_code == 400, (params, answer.status_code, answer.text)
        assert words.lower() in answer.json()["message"].lower(), (params, answer.json())
        assert "imports/" not in answer.json()["message"], answer.json()  # no path of the server's
    answer = requests.post(url, params={"schema": "synapse", "file_name": "five.csv"}, data=good, timeout=60)
    assert answer.status_code == 401
    listed = requests.get(f"{server.url}/annotation/api/v2/aligned_volume/{DS}/table", headers=headers, timeout=60).json()
    assert "upload_bad" not in listed
