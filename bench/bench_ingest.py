"""Ingest of a lab's segmentation (issue 15): throughput, memory, and the chunkedgraph after it.

Figures (issue targets in brackets):
- ``opencave ingest segmentation`` of a ~1-gigavoxel flat segmentation with ~1,000 objects, run
  as the CLI in a process of its own: voxels/s and supervoxels/s [>= 20 M voxels/s on 2 cores],
  peak RSS of the whole process tree, the ingest and its worker processes summed, polled every
  0.1 s [< 4 GiB]. Floor: cloud-volume reading the same volume block by block over the same
  graph-chunk grid with no further work, with as many processes as the ingest uses (a spawn
  process pool) and in one process.
- An in-process run of the same ingest (``runtime.ingest``, in a child process) for the
  split / graph / store breakdown.
- On the ingested datastack, through opencave's client against ``opencave serve`` over
  loopback: get_roots of 1,000,000 supervoxel ids [>= 2,000,000 ids/s], merge and split p50
  [< 100 ms] of adjacent objects (merged with points in nm, split back with source and sink
  points), each with its in-process floor as in ``bench_chunkedgraph.py``. Edits are timed
  back to back (as a proofreader works: the server makes each edit's meshes and L2 attributes
  behind it, on the same cores) and paced (each edit sent to an idle server); how long the
  server stays busy after the back-to-back series is reported too. get_roots is timed now
  (before the edits) and at a timestamp before the edits (after them, on an idle server).

The volume (1024^3 uint64, compressed_segmentation, 256x256x64 chunks, 1,000 labels on a
10x10x10 grid of cells whose walls are displaced by smooth random fields) is generated
deterministically slab by slab and cached under /tmp/bench-ingest-1g; every ingest gets a fresh
data directory.

Usage: python bench/bench_ingest.py [--cache DIR] [--size 1024] [--processes N] [--edits 40]
       [--no-floor] [--no-breakdown] [--no-graph] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import multiprocessing
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import get_roots_figures, opencave_cli, served, wait_idle  # noqa: E402

CELLS = 10  # cells per axis: CELLS**3 labels
AMPLITUDE = 24  # voxels the cell walls are displaced at most (cells are ~102 voxels wide)
RESOLUTION = (8, 8, 40)
CHUNK = (256, 256, 64)
SEED = 15
NAME = "bench_ingest"
PACED = 10  # merge/split pairs timed each on an idle server


# -- the volume -------------------------------------------------------------------------------------
class Generator:
    """Label of every voxel: the cell of its displaced coordinates, x shifted by fx(y, z), y by
    fy(x, z), z by fz(x, y) (smooth fields), so the walls between objects are curved surfaces and
    every object spans several graph chunks."""

    def __init__(self, size: int) -> None:
        from scipy import ndimage

        rng = np.random.default_rng(SEED)
        self.size = size

        def field() -> np.ndarray:
            low = rng.uniform(-1, 1, (9, 9))
            smooth = ndimage.zoom(low, size / 9, order=3, mode="nearest")[:size, :size]
            return np.round(AMPLITUDE * size / 1024 * smooth / np.abs(smooth).max()).astype(np.int32)

        self.fx, self.fy, self.fz = field(), field(), field()
        self.lut = np.unique(rng.integers(1, 1 << 40, 2 * CELLS**3, dtype=np.uint64))[: CELLS**3].copy()
        rng.shuffle(self.lut)

    def _cell(self, coord: np.ndarray, shift: np.ndarray) -> np.ndarray:
        return np.clip((coord + shift) * CELLS // self.size, 0, CELLS - 1).astype(np.int16)

    def block(self, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        x = np.arange(x0, x1, dtype=np.int32)[:, None, None]
        y = np.arange(y0, y1, dtype=np.int32)[None, :, None]
        z = np.arange(z0, z1, dtype=np.int32)[None, None, :]
        index = self._cell(x, self.fx[None, y0:y1, z0:z1]) * np.int16(CELLS * CELLS)
        index += self._cell(y, self.fy[x0:x1, None, z0:z1]) * np.int16(CELLS)
        index += self._cell(z, self.fz[x0:x1, y0:y1, None])
        return self.lut[index]

    def label_of_cell(self, cell: tuple[int, int, int]) -> int:
        return int(self.lut[(cell[0] * CELLS + cell[1]) * CELLS + cell[2]])


def ensure_volume(cache: Path, size: int) -> str:
    """The cached volume's URL, written first when missing (into a .partial directory, renamed)."""
    from cloudvolume import CloudVolume

    if (cache / "info").is_file():
        return f"file://{cache}"
    partial = cache.with_name(cache.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    print(f"writing the {size}^3 volume into {cache} …", flush=True)
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type="segmentation",
        data_type="uint64",
        encoding="compressed_segmentation",
        resolution=list(RESOLUTION),
        voxel_offset=[0, 0, 0],
        chunk_size=list(CHUNK),
        volume_size=[size] * 3,
    )
    volume = CloudVolume(f"file://{partial}", info=info, progress=False, parallel=1, cache=False, compress="gzip")
    volume.commit_info()
    gen = Generator(size)
    for z0 in range(0, size, CHUNK[2]):
        z1 = min(z0 + CHUNK[2], size)
        volume[:, :, z0:z1] = gen.block((0, 0, z0), (size, size, z1))[..., None]
    partial.rename(cache)
    print(f"volume written in {time.perf_counter() - start:.1f} s", flush=True)
    return f"file://{cache}"


# -- the floor: cloud-volume reading every graph chunk --------------------------------------------------
def chunk_boxes(size: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    boxes = []
    for coords in np.ndindex(*(-(-size // c) for c in CHUNK)):  # C order of (x, y, z), as the ingest
        lo = tuple(int(c * s) for c, s in zip(coords, CHUNK))
        boxes.append((lo, tuple(min(a + s, size) for a, s in zip(lo, CHUNK))))
    return boxes


_reader = None


def read_block(url: str, lo: tuple[int, ...], hi: tuple[int, ...]) -> int:
    """One block read and decoded exactly as the ingest reads it (its BlockReader), nothing more."""
    global _reader
    from opencave.services.ingest.source import BlockReader

    if _reader is None:
        _reader = BlockReader(url)
    return int(_reader.read(np.array(lo), np.array(hi)).size)


def read_floor(url: str, size: int, processes: int) -> dict:
    boxes = chunk_boxes(size)
    with RssPoller(os.getpid(), include_self=False) as rss:
        start = time.perf_counter()
        if processes <= 1:
            voxels = sum(read_block(url, lo, hi) for lo, hi in boxes)
        else:
            with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
                voxels = sum(pool.map(read_block, [url] * len(boxes), *zip(*boxes), chunksize=1))
        seconds = time.perf_counter() - start
    assert voxels == size**3
    return {"processes": processes, "seconds": round(seconds, 2), "voxels_per_s": round(voxels / seconds), "peak_rss_mb": rss.peak_mb}


# -- memory of a process tree ----------------------------------------------------------------------
class RssPoller:
    """Peak of the summed RSS of a process and all its descendants, polled every 0.1 s."""

    def __init__(self, pid: int, include_self: bool = True, every: float = 0.1) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.include_self = include_self
        self.every = every
        self.peak = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = self.root.children(recursive=True) + ([self.root] if self.include_self else [])
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            if total > self.peak:
                self.peak, self.peak_processes = total, len(procs)
            self._stop.wait(self.every)

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)

    def __enter__(self) -> "RssPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# -- the ingest ----------------------------------------------------------------------------------------
def run_ingest_cli(url: str, data_dir: Path, processes: int | None) -> dict:
    cmd = [sys.executable, "-m", "opencave", "ingest", "segmentation", NAME, "--watershed", url, "--grant", "default", "--data-dir", str(data_dir)]
    if processes:
        cmd += ["--processes", str(processes)]
    # the store is set up first (migrations, first admin), so the timed run is the ingest itself
    opencave_cli("token", "create", "admin@localhost", storage=["--data-dir", str(data_dir)])
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with RssPoller(proc.pid) as rss:
        out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"ingest failed ({proc.returncode}):\n{err[-4000:]}")
    lines = [line for line in (err.replace("\r", "\n")).splitlines() if line.startswith(NAME + ":") and "|" not in line]
    return {"seconds": round(seconds, 2), "peak_rss_mb": rss.peak_mb, "peak_processes": rss.peak_processes, "stdout": out.strip(), "summary": lines}


IN_PROCESS = """
import json, sys, time
from opencave.config import resolve_settings
from opencave.runtime import Runtime
from opencave.services.ingest.service import IngestRequest
url, data_dir, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
runtime = Runtime.open(resolve_settings(data_dir, None))
runtime.prepare()
start = time.perf_counter()
result = runtime.ingest.ingest(IngestRequest(name="%s", watershed=url, grant=("default",), workers=workers or None), bars=False)
print(json.dumps({"seconds": time.perf_counter() - start, "timings": result.timings, "n_supervoxels": result.n_supervoxels,
                  "n_objects": result.n_objects, "n_edges": result.n_edges}))
""" % NAME


def run_ingest_in_process(url: str, data_dir: Path, processes: int | None) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", IN_PROCESS, url, str(data_dir), str(processes or 0)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with RssPoller(proc.pid) as rss:
        out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"in-process ingest failed:\n{err[-4000:]}")
    record = json.loads(out.strip().splitlines()[-1])
    record["peak_rss_mb"] = rss.peak_mb
    return record


def profile_split_block(url: str, size: int) -> str:
    """cProfile of the worker function on one read block (one layer chunk, its graph chunks at
    the ingest's default size) in the middle of the volume, after a warm-up block so opening
    the layer is not counted."""
    from opencave.services.ingest.service import default_chunk_size
    from opencave.services.ingest.world import split_block
    from opencave.services.segmentation.precomputed import segmentation_info
    from opencave.wire.node_ids import NodeIdLayout, layer_count

    graph_chunk = default_chunk_size(CHUNK, RESOLUTION)
    grid = tuple(-(-size // c) for c in graph_chunk)
    layout = NodeIdLayout.for_layers(layer_count(grid))
    scale = segmentation_info((size,) * 3, RESOLUTION, graph_chunk)["scales"][0]
    per = [c // g for c, g in zip(CHUNK, graph_chunk)]
    out = Path(tempfile.mkdtemp(prefix="bench-ingest-prof-"))
    (out / scale["key"]).mkdir()

    def block(first: tuple[int, ...]) -> list[tuple[int, int, int]]:
        return [tuple(f + d for f, d in zip(first, delta)) for delta in np.ndindex(*per)]  # type: ignore[misc]

    try:
        split_block(url, layout, scale, block((0, 0, 0)), out)
        middle = tuple((g // 2) // p * p for g, p in zip(grid, per))
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        split_block(url, layout, scale, block(middle), out)
        profiler.disable()
        seconds = time.perf_counter() - start
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        return f"split_block of one {CHUNK} block ({len(block(middle))} graph chunks of {graph_chunk}): {seconds * 1000:.0f} ms\n" + text.getvalue()
    finally:
        shutil.rmtree(out, ignore_errors=True)


def adjacent_pairs(gen: Generator, n: int) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(label a, label b, voxel of a, voxel of b) of ``n`` pairs of cells touching along an axis:
    the two voxels either side of the wall on a line through the middle of the shared face."""
    rng = np.random.default_rng(SEED + 1)
    cell_size = gen.size / CELLS
    pairs, seen = [], set()
    while len(pairs) < n:
        axis = int(rng.integers(3))
        cell = rng.integers(0, CELLS, 3)
        cell[axis] = rng.integers(0, CELLS - 1)
        key = (axis, *cell.tolist())
        if key in seen:
            continue
        seen.add(key)
        other = cell.copy()
        other[axis] += 1
        label_a, label_b = gen.label_of_cell(tuple(cell)), gen.label_of_cell(tuple(other))
        centre = ((cell + 0.5) * cell_size).astype(int)
        lo, hi = centre.copy(), centre + 1
        lo[axis], hi[axis] = 0, gen.size
        line = gen.block(tuple(lo), tuple(hi)).reshape(-1)
        steps = np.flatnonzero((line[:-1] == label_a) & (line[1:] == label_b))
        if not steps.size:
            continue
        va, vb = centre.copy(), centre.copy()
        va[axis], vb[axis] = steps[0], steps[0] + 1
        pairs.append((label_a, label_b, va, vb))
    return pairs


def graph_figures(data_dir: Path, gen: Generator, n_edits: int) -> dict:
    import psutil
    from cloudvolume import CloudVolume

    from opencave import CAVEclient
    from opencave.services.chunkedgraph import edits
    from opencave.services.chunkedgraph.service import GraphService
    from opencave.storage.sql import create_store_engine

    storage = ["--data-dir", str(data_dir)]
    world_dir = data_dir / "worlds" / NAME
    graph = np.load(world_dir / "graph.npz")
    sv_ids = graph["sv_ids"]
    ws = CloudVolume(f"file://{world_dir / 'ws'}", progress=False, cache=False, fill_missing=False)
    token = opencave_cli("token", "create", "admin@localhost", storage=storage)
    results: dict[str, object] = {}
    pairs = adjacent_pairs(gen, n_edits + 4 + PACED)
    resolution = np.array(RESOLUTION)
    with served(storage, settle=True) as (url, server_pid):
        client = CAVEclient(NAME, server_address=url, auth_token=token)
        cg = client.chunkedgraph
        rng = np.random.default_rng(0)
        query = rng.choice(sv_ids, 1_000_000)
        cg.get_roots(query[:1000])
        before_edits = dt.datetime.now(dt.UTC)
        time.sleep(0.01)

        def get_roots(label: str, ts) -> None:
            figures = results[f"get_roots_{label}"] = get_roots_figures(cg, sv_ids, query, ts)
            print(f"get_roots 1M ({label}): {figures['ids_per_s']:,} ids/s (floor {figures['floor_ids_per_s']:,}, ratio {figures['ratio_to_floor']:.2f})", flush=True)

        get_roots("now", None)
        n_roots = int(np.unique(cg.get_roots(sv_ids)).size)
        results["roots_before_edits"] = n_roots

        # supervoxels of the voxels either side of each wall, read from the ingested watershed
        edit_pairs = []
        for label_a, label_b, va, vb in pairs:
            sa, sb = (int(np.asarray(ws[int(v[0]), int(v[1]), int(v[2])]).reshape(-1)[0]) for v in (va, vb))
            assert sa in set(cg.get_label_supervoxels(label_a).tolist()) and sb in set(cg.get_label_supervoxels(label_b).tolist())
            edit_pairs.append((sa, sb, va, vb))
        http_pairs, local_pairs, paced_pairs = edit_pairs[:n_edits], edit_pairs[n_edits : n_edits + 4], edit_pairs[n_edits + 4 :]

        def merge_and_split(sa: int, sb: int, va: np.ndarray, vb: np.ndarray, pace: bool) -> tuple[float, float]:
            nm_a, nm_b = (va * resolution).tolist(), (vb * resolution).tolist()
            if pace:
                wait_idle(server_pid)
            start = time.perf_counter()
            answer = cg.do_merge([sa, sb], [nm_a, nm_b], resolution=(1, 1, 1))
            merged_s = time.perf_counter() - start
            merged = answer["new_root_ids"][0]
            if pace:
                wait_idle(server_pid)
            start = time.perf_counter()
            _, new_roots = cg.execute_split([nm_a], [nm_b], merged, [sa], [sb])
            split_s = time.perf_counter() - start
            assert len(new_roots) == 2, new_roots
            return merged_s, split_s

        # back to back, as a proofreader works: the meshes of each edit are made behind it
        server = psutil.Process(server_pid)
        cpu_before = sum(server.cpu_times()[:2])
        merge_t, split_t = map(list, zip(*(merge_and_split(*pair, pace=False) for pair in http_pairs)))
        backlog = wait_idle(server_pid)
        cpu_per_edit = (sum(server.cpu_times()[:2]) - cpu_before) / (2 * len(http_pairs))
        results["server_busy_after_edits_s"] = round(backlog, 1)
        results["server_cpu_s_per_edit"] = round(cpu_per_edit, 3)
        print(f"server busy for {backlog:.1f} s after the last edit (meshes, L2 attributes); {cpu_per_edit:.3f} CPU s per edit", flush=True)
        assert int(np.unique(cg.get_roots(sv_ids)).size) == n_roots
        # paced: each edit starts on an idle server
        cpu_before = sum(server.cpu_times()[:2])
        paced_merge, paced_split = map(list, zip(*(merge_and_split(*pair, pace=True) for pair in paced_pairs)))
        wait_idle(server_pid)
        results["server_cpu_s_per_paced_edit"] = round((sum(server.cpu_times()[:2]) - cpu_before) / (2 * len(paced_pairs)), 3)
        graphs = GraphService(create_store_engine(f"sqlite:///{data_dir / 'opencave.db'}"))
        handle = graphs.graph(NAME)
        local_merge, local_split = [], []
        for sa, sb, va, vb in local_pairs * 3:
            start = time.perf_counter()
            graphs.commit(handle, lambda ix, a=sa, b=sb: edits.plan_merge(ix, a, b, {}), "1")
            local_merge.append(time.perf_counter() - start)
            start = time.perf_counter()
            graphs.commit(
                handle,
                lambda ix, a=sa, b=sb, pa=va, pb=vb: edits.plan_split(
                    ix, edits.find_split(ix, np.array([a], np.uint64), np.array([b], np.uint64), pa[None], pb[None]), {}
                ),
                "1",
            )
            local_split.append(time.perf_counter() - start)
        for key, times, paced, floor in (("merge", merge_t, paced_merge, local_merge), ("split", split_t, paced_split, local_split)):
            p50 = statistics.median(times)
            results[f"{key}_latency"] = {
                "p50_ms": round(1000 * p50, 1),
                "p90_ms": round(1000 * float(np.percentile(times, 90)), 1),
                "n": len(times),
                "paced_p50_ms": round(1000 * statistics.median(paced), 1),
                "paced_p90_ms": round(1000 * float(np.percentile(paced, 90)), 1),
                "paced_n": len(paced),
                "floor_p50_ms": round(1000 * statistics.median(floor), 1),
                "ratio_to_floor": round(p50 / statistics.median(floor), 2),
                "paced_ratio_to_floor": round(statistics.median(paced) / statistics.median(floor), 2),
            }
            print(f"{key}: {results[f'{key}_latency']}", flush=True)
        wait_idle(server_pid)
        get_roots("past", before_edits)
    return results


# -- main ------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", default="/tmp/bench-ingest-1g")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--processes", type=int, default=None, help="ingest --processes (default: the ingest's own choice, one per core)")
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--no-graph", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile split_block on one read block")
    parser.add_argument("--keep", action="store_true", help="keep the ingest's data directory")
    args = parser.parse_args()
    cache = Path(args.cache) if args.size == 1024 else Path(f"{args.cache}-{args.size}")
    url = ensure_volume(cache, args.size)
    n_voxels = args.size**3
    processes = args.processes or os.cpu_count() or 1
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    record: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": " ".join(sys.argv),
        "volume": {"url": url, "size": [args.size] * 3, "voxels": n_voxels, "chunk_size": list(CHUNK), "labels": CELLS**3},
        "load_before": [round(v, 2) for v in load],
    }
    if not args.no_floor:
        floor_n = read_floor(url, args.size, processes)
        floor_1 = read_floor(url, args.size, 1)
        record["floor"] = {"pool": floor_n, "single": floor_1}
        print(f"floor, {processes} processes: {floor_n}\nfloor, 1 process: {floor_1}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-run-"))
    try:
        data_dir = work / "cli"
        ingest = run_ingest_cli(url, data_dir, args.processes)
        world = json.loads((data_dir / "worlds" / NAME / "world.json").read_text())
        own = re.search(r"voxels, ([0-9.]+) s\)", ingest["stdout"])
        if own:  # the command's own clock: from its request to the registered datastack
            ingest["seconds_own_clock"] = float(own.group(1))
        ingest.update(
            voxels_per_s=round(n_voxels / ingest["seconds"]),
            supervoxels=world["n_supervoxels"],
            supervoxels_per_s=round(world["n_supervoxels"] / ingest["seconds"]),
            objects=world["n_objects"],
            edges=world["n_edges"],
            graph_chunks=int(np.prod(world["chunks_per_axis"])),
        )
        if "floor" in record:
            ingest["time_ratio_to_floor"] = round(ingest["seconds"] / record["floor"]["pool"]["seconds"], 2)  # type: ignore[index]
            ingest["time_ratio_to_single_process_floor"] = round(ingest["seconds"] / record["floor"]["single"]["seconds"], 2)  # type: ignore[index]
        record["ingest"] = ingest
        print(f"ingest (CLI): {json.dumps(ingest, indent=1)}", flush=True)
        if not args.no_breakdown:
            breakdown = run_ingest_in_process(url, work / "inproc", args.processes)
            record["ingest_in_process"] = breakdown
            shutil.rmtree(work / "inproc", ignore_errors=True)
            print(f"ingest (in-process): {breakdown}", flush=True)
        if args.profile:
            record["profile"] = profile_split_block(url, args.size)
            print(record["profile"], flush=True)
        if not args.no_graph:
            record["chunkedgraph"] = graph_figures(data_dir, Generator(args.size), args.edits)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    record["load_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
