"""Every chunkedgraph and L2-cache method: the genuine caveclient 8.2.1 and opencave's client,
against the same ``opencave serve`` on the demo datastack, return equal results — at a
timestamp before the proofreading history, one in the middle of it, and now."""

from __future__ import annotations

import datetime as dt
import json
import math

import caveclient
import networkx as nx
import numpy as np
import pandas as pd
import pytest

import opencave
from tests.support.demo import demo_world

DS = "opencave_demo"


@pytest.fixture(scope="module")
def world(server):
    return demo_world(server)


@pytest.fixture(scope="module")
def pair(server, admin_token):
    return (
        caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
        opencave.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
    )


def same(a, b, path="result") -> None:
    """Deep equality that also requires equal types and dtypes."""
    if isinstance(a, pd.DataFrame):
        assert isinstance(b, pd.DataFrame), path
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, (path, type(b), getattr(b, "dtype", None), a.dtype)
        assert a.shape == b.shape and np.array_equal(a, b), path
    elif isinstance(a, nx.Graph):
        assert isinstance(b, nx.Graph) and set(a.nodes) == set(b.nodes) and set(a.edges) == set(b.edges), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(map(str, a)) == set(map(str, b)), (path, set(a) ^ set(b))
        assert [type(k) for k in a] == [type(k) for k in b], path
        for key in a:
            same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert type(a) is type(b) and a == b, (path, a, b)


def _times(world):
    epoch = world.epoch
    ops = world.op_times
    return {
        "before": epoch + dt.timedelta(minutes=1),
        "between": ops[len(ops) // 2] + dt.timedelta(seconds=1),
        "now": None,
    }


WHEN = ["before", "between", "now"]


@pytest.mark.parametrize("when", WHEN)
def test_roots_and_hierarchy(pair, world, when):
    genuine, ours = pair
    ts = _times(world)[when]
    svs = world.soma_supervoxels
    roots = genuine.chunkedgraph.get_roots(svs, timestamp=ts)
    same(roots, ours.chunkedgraph.get_roots(svs, timestamp=ts))
    assert (roots > 0).all()
    same(genuine.chunkedgraph.get_roots(svs, timestamp=ts, stop_layer=2), ours.chunkedgraph.get_roots(svs, timestamp=ts, stop_layer=2))
    same(genuine.chunkedgraph.get_root_id(int(svs[0]), timestamp=ts), ours.chunkedgraph.get_root_id(int(svs[0]), timestamp=ts))
    same(
        genuine.chunkedgraph.get_root_id(int(svs[0]), timestamp=ts, level2=True),
        ours.chunkedgraph.get_root_id(int(svs[0]), timestamp=ts, level2=True),
    )
    root = int(roots[0])
    for method, args, kwargs in [
        ("get_children", (root,), {}),
        ("get_leaves", (root,), {}),
        ("get_leaves", (root,), {"stop_layer": 2}),
        ("get_leaves", (root,), {"bounds": world.bounds_around(0)}),
        ("get_leaves_many", (roots[:3],), {}),
        ("get_leaves_many", (roots[:3],), {"stop_layer": 2, "bounds": world.bounds_around(0)}),
        ("is_latest_roots", (roots,), {"timestamp": ts}),
        ("get_root_timestamps", (roots,), {}),
        ("get_root_timestamps", (roots,), {"latest": True, "timestamp": ts or dt.datetime.now(dt.timezone.utc)}),
        ("is_valid_nodes", (roots,), {}),
        ("get_subgraph", (root, world.bounds_around(0)), {}),
        ("level2_chunk_graph", (root,), {}),
        ("level2_chunk_graph", (root,), {"bounds": world.bounds_around(0)}),
        ("get_contact_sites", (root, world.bounds_around(0)), {}),
        ("get_contact_sites", (root, world.bounds_around(0)), {"calc_partners": True}),
        ("suggest_latest_roots", (root,), {}),
        ("suggest_latest_roots", (root,), {"return_all": True, "return_fraction_overlap": True}),
        ("get_latest_roots", (root,), {}),
        ("get_original_roots", (root,), {}),
        ("get_past_ids", (roots,), {"timestamp_past": _times(world)["before"]}),
        ("get_lineage_graph", (root,), {}),
        ("get_lineage_graph", (root,), {"as_nx_graph": True}),
        ("get_change_log", (root,), {}),
        ("get_change_log", (root,), {"filtered": False}),
        ("get_tabular_change_log", (roots[:3],), {}),
        ("get_tabular_change_log", (roots[:3],), {"filtered": False}),
        ("get_merge_log", (root,), {}),
    ]:
        same(getattr(genuine.chunkedgraph, method)(*args, **kwargs), getattr(ours.chunkedgraph, method)(*args, **kwargs), method)


def test_covering_nodes_and_chunk_graph(pair, world):
    genuine, ours = pair
    root = int(genuine.chunkedgraph.get_roots(world.soma_supervoxels[:1])[0])
    l2 = genuine.chunkedgraph.get_leaves(root, stop_layer=2)
    same(genuine.chunkedgraph.get_minimal_covering_nodes(l2), ours.chunkedgraph.get_minimal_covering_nodes(l2))
    assert genuine.chunkedgraph.get_minimal_covering_nodes(l2).tolist() == [root]
    same(genuine.chunkedgraph.get_minimal_covering_nodes(l2[:5]), ours.chunkedgraph.get_minimal_covering_nodes(l2[:5]))


def test_history_methods(pair, world):
    genuine, ours = pair
    times = _times(world)
    same(genuine.chunkedgraph.get_oldest_timestamp(), ours.chunkedgraph.get_oldest_timestamp())
    same(genuine.chunkedgraph.get_delta_roots(times["before"], times["between"]), ours.chunkedgraph.get_delta_roots(times["before"], times["between"]))
    old, new = genuine.chunkedgraph.get_delta_roots(times["before"])
    assert old.size and new.size
    same(genuine.chunkedgraph.get_operation_details([1, 2, 3]), ours.chunkedgraph.get_operation_details([1, 2, 3]))
    for user in (1, 2):
        same(
            genuine.chunkedgraph.get_user_operations(user, times["before"]),
            ours.chunkedgraph.get_user_operations(user, times["before"]),
        )
    past = genuine.chunkedgraph.get_roots(world.soma_supervoxels, timestamp=times["before"])
    same(genuine.chunkedgraph.is_latest_roots(past), ours.chunkedgraph.is_latest_roots(past))
    same(genuine.chunkedgraph.get_latest_roots(int(past[0])), ours.chunkedgraph.get_latest_roots(int(past[0])))
    same(
        genuine.chunkedgraph.get_lineage_graph(int(past[0]), timestamp_past=times["before"], timestamp_future=times["between"]),
        ours.chunkedgraph.get_lineage_graph(int(past[0]), timestamp_past=times["before"], timestamp_future=times["between"]),
    )


def test_find_path_and_segmentation_info(pair, world):
    genuine, ours = pair
    root = int(genuine.chunkedgraph.get_roots(world.soma_supervoxels[:1])[0])
    a, b = world.two_points_on(genuine, root)
    same(genuine.chunkedgraph.find_path(root, a, b), ours.chunkedgraph.find_path(root, a, b))
    for name in ("segmentation_info", "base_resolution", "cloudvolume_path", "table_name"):
        same(getattr(genuine.chunkedgraph, name), getattr(ours.chunkedgraph, name), name)


def test_l2cache_methods(pair, world):
    genuine, ours = pair
    root = int(genuine.chunkedgraph.get_roots(world.soma_supervoxels[:1])[0])
    l2 = genuine.chunkedgraph.get_leaves(root, stop_layer=2)[:50]
    data = genuine.l2cache.get_l2data(l2)
    same(data, ours.l2cache.get_l2data(l2))
    assert all(data[str(i)]["size_nm3"] > 0 for i in l2)
    same(genuine.l2cache.get_l2data(l2, attributes=["rep_coord_nm", "area_nm2"]), ours.l2cache.get_l2data(l2, attributes=["rep_coord_nm", "area_nm2"]))
    same(genuine.l2cache.get_l2data_table(l2[:10], attributes=["size_nm3", "rep_coord_nm"]), ours.l2cache.get_l2data_table(l2[:10], attributes=["size_nm3", "rep_coord_nm"]))
    same(genuine.l2cache.cache_metadata(), ours.l2cache.cache_metadata())
    same(genuine.l2cache.attributes, ours.l2cache.attributes)
    same(genuine.l2cache.table_mapping(), ours.l2cache.table_mapping())
    same(genuine.l2cache.has_cache(), ours.l2cache.has_cache())
    assert genuine.l2cache.has_cache() is True


def test_edits_through_both_clients(pair, world):
    """Each client merges two objects, previews and splits them again, and undoes: the answers
    have the same shape, and each client sees the other's edits."""
    for client, (point_a, point_b) in zip(pair, world.merge_candidates(pair[0], 2)):
        cg = client.chunkedgraph
        res = tuple(int(v) for v in (4, 4, 40))
        sv_a, sv_b = int(point_a[0]), int(point_b[0])
        before = cg.get_roots([sv_a, sv_b])
        result = cg.do_merge([sv_a, sv_b], [point_a[1], point_b[1]], resolution=res)
        assert set(result) == {"operation_id", "new_root_ids"} and len(result["new_root_ids"]) == 1
        merged = result["new_root_ids"][0]
        assert (cg.get_roots([sv_a, sv_b]) == merged).all()
        assert not cg.is_latest_roots(before).any()
        nm_a, nm_b = world.nm_point(sv_a), world.nm_point(sv_b)  # split points are in nm
        source, sink, ok = cg.preview_split([nm_a], [nm_b], merged, [sv_a], [sv_b])[:3]
        assert ok and sv_a in source and sv_b in sink
        op, new_roots = cg.execute_split([nm_a], [nm_b], merged, [sv_a], [sv_b])
        assert len(new_roots) >= 2
        roots = cg.get_roots([sv_a, sv_b])
        assert roots[0] != roots[1]
        undone = cg.undo_operation(op)
        assert (cg.get_roots([sv_a, sv_b]) == undone["new_root_ids"][0]).all()
        details = cg.get_operation_details([op])[str(op)]
        assert details["removed_edges"]
        other = pair[1] if client is pair[0] else pair[0]
        same(other.chunkedgraph.get_roots([sv_a, sv_b]), cg.get_roots([sv_a, sv_b]))
        cg.remesh_level2_chunks(cg.get_leaves(merged, stop_layer=2)[:2])


def test_segmentation_info_is_precomputed_compatible(pair):
    info = pair[1].chunkedgraph.segmentation_info
    assert info["app"]["supported_api_versions"] == [0, 1]
    assert info["graph"]["n_layers"] >= 4 and info["scales"][0]["resolution"] == [8, 8, 40]
    json.dumps(info)
