"""The demo's annotation content: determinism, points inside their supervoxels, realistic counts
and a consistent timeline, checked on the small world."""

from __future__ import annotations

import itertools
import time
from datetime import datetime

import numpy as np
import pytest

from opencave.demo.annotations import (
    SYNAPSE_TARGETS,
    DemoAnnotations,
    TableContent,
    generate_annotations,
    synapse_target,
)
from opencave.demo.world import build_world
from opencave.services.schemas.columns import layout
from opencave.services.segmentation.volume import WatershedVolume


def _posix(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("worlds") / "small", "small", seed=0, progress=False)


@pytest.fixture(scope="module")
def timed(world) -> tuple[DemoAnnotations, float]:
    start = time.perf_counter()
    result = generate_annotations(world, seed=0)
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def annotations(timed) -> DemoAnnotations:
    return timed[0]


@pytest.fixture(scope="module")
def volume(world) -> WatershedVolume:
    return WatershedVolume(world.ws_dir)


def _neurons(world, ids: np.ndarray) -> np.ndarray:
    index = world.graph.sv_index(ids)
    assert (index >= 0).all()
    return world.graph.sv_neuron[index]


def _equal(a: TableContent, b: TableContent) -> bool:
    arrays = lambda t: [
        *t.columns.values(),
        t.created,
        t.deleted,
        *(x for x in (t.target_index, t.supersedes_index) if x is not None),
        *(t.supervoxel_ids or {}).values(),
    ]
    return a.columns.keys() == b.columns.keys() and all(
        np.array_equal(x, y, equal_nan=x.dtype.kind == "f") for x, y in zip(arrays(a), arrays(b))
    )


def test_same_seed_same_arrays_and_fast(world, timed):
    first, seconds = timed
    again = generate_annotations(world, seed=0)
    assert [t.name for t in first.tables] == [t.name for t in again.tables]
    assert all(_equal(a, b) for a, b in zip(first.tables, again.tables))
    assert first.version_times == again.version_times
    other = generate_annotations(world, seed=1).table("synapses")
    assert not np.array_equal(
        other.columns["pre_pt_position"],
        first.table("synapses").columns["pre_pt_position"],
    )
    assert seconds < 1.0


def test_columns_match_the_schemas(annotations):
    names = [t.name for t in annotations.tables]
    assert names.index("nucleus_detection") < names.index("cell_types")
    for table in annotations.tables:
        shape = layout(table.schema)
        flat = {c.name for c in shape.flat}
        segmentation = {c.name for c in shape.flat if c.segmentation}
        given = set(table.columns) | {"id", "valid"} | segmentation
        if shape.is_reference:
            assert table.reference_table == "nucleus_detection"
            assert table.target_index is not None and len(table.target_index) == table.n_rows
            given |= {"target_id"}
        assert given == flat, table.name
        assert set(table.supervoxel_ids or {}) == {
            c for c in segmentation if c.endswith("_supervoxel_id")
        }
        for name, column in table.columns.items():
            assert len(column) == table.n_rows, (table.name, name)
            assert column.shape == (
                (table.n_rows, 3) if name.endswith("_position") else (table.n_rows,)
            )
        assert table.created.dtype == table.deleted.dtype == np.float64
        assert table.description


def test_synapse_points_lie_in_their_supervoxels_on_contacts(world, annotations, volume):
    synapses = annotations.table("synapses")
    pre, post = (
        synapses.columns["pre_pt_position"],
        synapses.columns["post_pt_position"],
    )
    ctr = synapses.columns["ctr_pt_position"]
    pre_sv, post_sv = (volume.supervoxels_at(p) for p in (pre, post))
    assert np.array_equal(pre_sv, synapses.supervoxel_ids["pre_pt_supervoxel_id"])
    assert np.array_equal(post_sv, synapses.supervoxel_ids["post_pt_supervoxel_id"])
    assert (_neurons(world, pre_sv) != _neurons(world, post_sv)).all()
    assert ((_neurons(world, pre_sv) > 0) | (_neurons(world, post_sv) > 0)).all()
    # pre and post face each other across the cleft along one axis, the centre between them
    offset = post.astype(np.int64) - pre
    assert ((offset != 0).sum(axis=1) == 1).all()
    assert (np.abs(offset).sum(axis=1) <= 5).all()
    low, high = np.minimum(pre, post), np.maximum(pre, post)
    assert ((ctr >= low) & (ctr <= high)).all()
    # the supervoxels touch: every pre/post pair is an edge of the graph
    edges = {tuple(e) for e in world.graph.edges.tolist()}
    pairs = np.unique(np.sort(np.stack([pre_sv, post_sv], axis=1), axis=1), axis=0)
    assert all(tuple(p) in edges for p in pairs.tolist())


def test_cell_points_lie_in_their_supervoxels(world, annotations, volume):
    somas = np.array([c["soma_supervoxel"] for c in world.cells], dtype=np.uint64)
    nuclei = annotations.table("nucleus_detection")
    found = volume.supervoxels_at(nuclei.columns["pt_position"])
    assert np.array_equal(found, nuclei.supervoxel_ids["pt_supervoxel_id"])
    n = world.n_neurons
    assert np.array_equal(found[:n], somas)
    assert (found[n:] != 0).all() and not np.isin(found[n:], somas).any()
    start, end = nuclei.columns["bb_start_position"], nuclei.columns["bb_end_position"]
    assert ((start <= nuclei.columns["pt_position"]) & (nuclei.columns["pt_position"] < end)).all()
    assert (nuclei.columns["volume"] > 0).all()

    status = annotations.table("proofreading_status")
    cells = status.columns["valid_id"]
    assert np.array_equal(volume.supervoxels_at(status.columns["pt_position"]), somas[cells])
    assert np.array_equal(status.supervoxel_ids["pt_supervoxel_id"], somas[cells])


def test_counts_near_targets(world, annotations):
    assert SYNAPSE_TARGETS["large"] >= 10_500_000 and synapse_target("small") == 20_000
    with pytest.raises(ValueError):
        synapse_target("huge")
    synapses = annotations.table("synapses")
    assert synapses.n_rows == synapse_target("small")
    deleted = np.isfinite(synapses.deleted).mean()
    assert 0.005 <= deleted <= 0.02
    late = (synapses.created > annotations.version_times[0]).mean()
    assert 0.03 <= late <= 0.07
    n = world.n_neurons
    nuclei = annotations.table("nucleus_detection")
    assert n < nuclei.n_rows <= n + max(1, round(0.05 * n))
    assert np.isfinite(nuclei.deleted[n:]).all() and np.isnan(nuclei.deleted[:n]).all()
    status = annotations.table("proofreading_status")
    assert 0.6 * n <= status.n_rows < n
    assert len(np.unique(status.columns["valid_id"])) == status.n_rows


def test_per_neuron_counts_are_heavy_tailed(world, annotations):
    synapses = annotations.table("synapses")
    n = world.n_neurons
    for column in ("pre_pt_supervoxel_id", "post_pt_supervoxel_id"):
        counts = np.bincount(_neurons(world, synapses.supervoxel_ids[column]), minlength=n + 1)[1:]
        ranked = np.sort(counts)[::-1]
        assert ranked[0] > 3 * np.median(counts), column
        assert ranked[:2].sum() > 0.3 * counts.sum(), column
    size = synapses.columns["size"]
    assert (size > 0).all()
    assert np.percentile(size, 99) > 5 * np.median(size) and np.median(size) > 5 * np.percentile(
        size, 1
    )


def _last_edits(world) -> np.ndarray:
    """Time of the last history operation touching each cell (undo/redo touch their target's)."""
    touched: list[set[int]] = []
    last = np.full(world.n_neurons + 1, -np.inf)
    neuron = dict(zip(world.graph.sv_ids.tolist(), world.graph.sv_neuron.tolist()))
    for op in world.history:
        if op["kind"] in ("undo", "redo"):
            cells = touched[op["target"]]
        else:
            points = op["points"] if op["kind"] == "merge" else op["sources"] + op["sinks"]
            cells = {neuron[p[0]] for p in points} - {0}
        touched.append(cells)
        for cell in cells:
            last[cell] = _posix(op["timestamp"])
    return last[1:]


def test_timeline_is_consistent(world, annotations):
    epoch = _posix(world.epoch)
    edits = np.array([_posix(op["timestamp"]) for op in world.history])
    versions = annotations.version_times
    assert len(versions) >= 3 and all(a < b for a, b in itertools.pairwise(versions))
    stamps = np.concatenate(
        [edits]
        + [t.created for t in annotations.tables]
        + [t.deleted[np.isfinite(t.deleted)] for t in annotations.tables]
    )
    for v in versions:
        assert np.abs(stamps - v).min() >= 1e-3
    assert versions[-1] > stamps.max()
    assert versions[0] < np.median(edits) and versions[0] < edits.max() < versions[-1]
    assert edits.min() < versions[1] < edits.max()
    for table in annotations.tables:
        assert np.isfinite(table.created).all() and (table.created >= epoch).all()
        assert (np.diff(table.created) >= 0).all(), table.name
        gone = np.isfinite(table.deleted)
        assert (table.deleted[gone] > table.created[gone]).all(), table.name

    # detections run right after the epoch, before version 1
    for name in ("nucleus_detection", "synapses"):
        created = annotations.table(name).created
        assert created.min() < epoch + 3600 and created.min() < versions[0]
    synapses = annotations.table("synapses")
    late = synapses.created > versions[0]
    assert (synapses.created[late] > edits.min()).all() and (
        synapses.created[late] < versions[1]
    ).all()

    # proofreading status after each cell's last edit
    status = annotations.table("proofreading_status")
    last = _last_edits(world)[status.columns["valid_id"]]
    assert np.isfinite(last).any()
    assert (status.created > last).all()


def test_cell_type_updates_supersede_rows(world, annotations):
    types = annotations.table("cell_types")
    n = world.n_neurons
    assert np.array_equal(np.sort(types.target_index[:n]), np.arange(n))
    updates = np.flatnonzero(types.supersedes_index >= 0)
    assert len(updates) >= 1
    old = types.supersedes_index[updates]
    assert np.array_equal(types.deleted[old], types.created[updates])
    assert np.array_equal(types.target_index[old], types.target_index[updates])
    assert (types.columns["cell_type"][old] != types.columns["cell_type"][updates]).all()
    assert np.isnan(types.deleted[updates]).all()
    alive = np.isnan(types.deleted)
    assert np.array_equal(np.sort(types.target_index[alive]), np.arange(n))
    for row in np.flatnonzero(alive):
        cell = world.cells[types.target_index[row]]
        assert types.columns["cell_type"][row] == cell["cell_type"]
        assert types.columns["classification_system"][row] == f"aibs_coarse_{cell['cell_class']}"
