"""The MICrONS-scale version generator (``bench/make_microns_version.py``) at a tiny size: the
version it writes is registered and published, its files are sorted as the query path expects,
its copies hold the same rows, and a query for one neuron's inputs answers them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench import make_microns_version as generator
from opencave.config import resolve_settings
from opencave.runtime import Runtime
from opencave.services.materialize.requests import QueryOptions
from opencave.storage.snapshots import clustered_name
from opencave.wire.materialize_query import TableQueryBody

SYNAPSES = 20_000
MAIN = "synapses.parquet"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A data directory with the generated version, and the generator's runtime view of it."""
    data_dir = tmp_path_factory.mktemp("microns")
    assert generator.main(["--data-dir", str(data_dir), "--synapses", str(SYNAPSES), "--proofread", "5", "--no-demo", "--seed", "3"]) == 0
    runtime = Runtime.open(resolve_settings(str(data_dir)))
    yield runtime
    runtime.engine.dispose()


def _sorted_by(table: pa.Table, column: str) -> bool:
    keys = np.stack([table[column].to_numpy(), table["id"].to_numpy()])
    order = np.lexsort(keys[::-1])
    return bool(np.array_equal(order, np.arange(table.num_rows)))


def test_version_is_published_with_its_tables(generated):
    registry = generated.materializer.registry
    assert generated.materialize.versions(generator.DATASTACK) == [1]
    version = registry.version(generator.DATASTACK, 1)
    assert version.status == "AVAILABLE" and version.valid
    rows = {t.table_name: t.row_count for t in registry.tables(version, "table")}
    assert rows["synapses"] == SYNAPSES
    assert rows["proofreading_status"] == 5
    assert rows["nucleus_detection"] == len(pq.read_table(Path(version.location) / "nucleus_detection.parquet"))
    assert not list(Path(version.location).parent.parent.glob(".*building*"))  # the work folder is gone


def test_files_are_sorted_and_hold_the_same_rows(generated):
    directory = Path(generated.materializer.registry.version(generator.DATASTACK, 1).location)
    main = pq.read_table(directory / MAIN)
    by_pre = pq.read_table(directory / clustered_name(MAIN, "pre_pt_root_id"))
    by_post = directory / clustered_name(MAIN, "post_pt_root_id")
    assert main.num_rows == by_pre.num_rows == SYNAPSES
    assert np.array_equal(main["id"].to_numpy(), np.arange(1, SYNAPSES + 1))
    assert _sorted_by(main, "post_pt_root_id")  # ids in post-root order: the id-sorted file is the post copy
    assert os.stat(by_post).st_ino == os.stat(directory / MAIN).st_ino
    assert _sorted_by(by_pre, "pre_pt_root_id")
    assert by_pre.sort_by("id").equals(main)  # every column a function of the id, whatever the order
    assert pq.ParquetFile(directory / clustered_name(MAIN, "pre_pt_root_id")).metadata.row_group(0).column(3).statistics.has_min_max
    assert main["pre_pt_root_id"].to_numpy().size and pc.count_distinct(main["pre_pt_root_id"]).as_py() > 100  # fragments


def test_manifest_lists_the_files(generated):
    directory = Path(generated.materializer.registry.version(generator.DATASTACK, 1).location)
    manifest = json.loads((directory / "version.json").read_text())
    entries = {entry["name"]: entry for entry in manifest["tables"]}
    assert set(entries) == {"synapses", "nucleus_detection", "proofreading_status"}
    assert entries["synapses"]["row_count"] == SYNAPSES
    for entry in entries.values():
        assert (directory / entry["path"]).exists()
        assert entry["clustered"] and all((directory / name).exists() for name in entry["clustered"].values())


def test_one_neurons_inputs_are_answered(generated):
    service = generated.materialize
    directory = Path(generated.materializer.registry.version(generator.DATASTACK, 1).location)
    proofread = pq.read_table(directory / "proofreading_status.parquet")["pt_root_id"].to_pylist()
    main = pq.read_table(directory / MAIN)
    for root in proofread[:2]:
        body = TableQueryBody.model_validate({"filter_equal_dict": {"synapses": {"post_pt_root_id": root}}})
        found = service.frozen_table(generator.DATASTACK, 1, "synapses")
        answer = service.query_table(found, body.decode(), QueryOptions(), rescale=False).table()
        expected = main.filter(pc.equal(main["post_pt_root_id"], root))
        assert answer.num_rows == expected.num_rows > 0
        assert sorted(answer["id"].to_pylist()) == expected["id"].to_pylist()
