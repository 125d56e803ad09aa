"""Write a synthetic MICrONS-scale frozen version straight into a data directory's versions store.

The version (default 300,000,000 synapses) is registered and published through the project's
own registry, so ``opencave serve --data-dir D`` serves it and caveclient queries it like any
materialized version. Its datastack (``microns_synthetic`` by default) is registered with an info
record like the demo's, with three tables:

- ``synapses`` (schema ``synapse``): ~100,000 neurons with somata in a 1.4 x 0.9 x 0.5 mm box at
  4 x 4 x 40 nm voxels; lognormal in-degree (mean ~3,000 inputs per neuron); most presynaptic
  partners are unproofread axon fragments (millions of distinct roots, heavy-tailed sizes), the
  rest neurons with lognormal out-degree weights; positions around the post neuron's soma within
  a dendritic radius, pre/ctr/post a few voxels apart; lognormal synapse sizes;
- ``nucleus_detection``: one row per neuron (its soma);
- ``proofreading_status``: the ~2,000 "proofread" neurons, to pick the MICrONS workload from.

Every column of a synapse is a function of its id (counter-based hashing, splitmix64), so rows can
be regenerated in any order: ids are given in post-root order, which makes the id-sorted file
also sorted by (post_pt_root_id, id) and its clustered copy by post root a hard link; the copy by
pre root is written from the (pre root, id) pairs sorted in memory (8 bytes a synapse; each
synapse's partner, drawn once, is kept meanwhile: 4 bytes more). Since the
id-sorted file is the post-root copy, it has the copies' row groups (16,384 rows) by default: one
neuron's inputs then decode a quarter of what 65,536-row groups take (~28 ms against ~43 ms for
3,000 rows on a busy 2-core machine).

Files are written under a work folder of the data directory (complete files kept, so an
interrupted run resumes where it stopped) and moved into the version's folder only when all are
complete; the version is then registered and published in one go.

Usage: python bench/make_microns_version.py [--data-dir /tmp/opencave-microns] [--synapses N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from opencave.config import resolve_settings
from opencave.errors import Conflict
from opencave.services.materialize import clustering
from opencave.services.materialize.layout import frozen_layout
from opencave.services.materialize.manifest import write_version_manifest
from opencave.services.materialize.versions import FrozenTable
from opencave.services.transfer.version_import import SourceTable, table_metadata
from opencave.storage.snapshots import CLUSTERED_ROW_GROUP_ROWS, COMPRESSION, ROW_GROUP_ROWS, clustered_name

DATASTACK = "microns_synthetic"
RESOLUTION = (4.0, 4.0, 40.0)
BOX_NM = (1_400_000.0, 900_000.0, 500_000.0)  # ~1.4 x 0.9 x 0.5 mm
BOX = np.array([b / r for b, r in zip(BOX_NM, RESOLUTION)])  # in voxels: 350,000 x 225,000 x 12,500
DENDRITE_SIGMA = np.array([15_000.0, 15_000.0, 600.0])  # ~60 um in x/y, ~24 um in z (voxels)
ROOT_BASE = 864_691_135_000_000_000  # MICrONS-like root ids
SV_BASE = 88_000_000_000_000_000  # MICrONS-like supervoxel ids
MEAN_IN_DEGREE = 3_000
FROM_NEURONS = 0.2  # share of synapses whose presynaptic partner is a (proofread-able) neuron
FRAGMENTS_PER_SYNAPSE = 0.02  # distinct axon fragments: 6 million for 300 million synapses
CHUNK = 1 << 21  # rows generated and written at a time (a multiple of both row-group sizes)
SYNAPSE_FILE = "synapses.parquet"

U64 = np.uint64
GOLDEN, MIX1, MIX2 = U64(0x9E3779B97F4A7C15), U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB)
MASK40 = (1 << 40) - 1
PERMUTE_A, PERMUTE_B = 0x5DEECE66D1 | 1, 0x2545F4914F  # an odd multiplier: a bijection mod 2**40


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of uint64 values (wrapping arithmetic), element-wise."""
    with np.errstate(over="ignore"):
        z = x + GOLDEN
        z = (z ^ (z >> U64(30))) * MIX1
        z = (z ^ (z >> U64(27))) * MIX2
    return z ^ (z >> U64(31))


class Hasher:
    """Independent pseudo-random streams indexed by synapse id: stream ``k`` of id ``i`` is a
    hash of (seed, k, i), so any row can be regenerated alone."""

    def __init__(self, seed: int) -> None:
        self.keys = [int(splitmix64(np.array([seed * 1_000 + k], dtype=U64))[0]) for k in range(16)]

    def bits(self, ids: np.ndarray, stream: int) -> np.ndarray:
        with np.errstate(over="ignore"):
            return splitmix64(ids.astype(U64) * GOLDEN ^ U64(self.keys[stream]))

    def uniform(self, ids: np.ndarray, stream: int) -> np.ndarray:
        """Uniform floats in (0, 1)."""
        return ((self.bits(ids, stream) >> U64(11)).astype(np.float64) + 0.5) * 2.0**-53

    def normals(self, ids: np.ndarray, stream: int) -> tuple[np.ndarray, np.ndarray]:
        """Two independent standard normals per id (Box-Muller)."""
        radius = np.sqrt(-2.0 * np.log(self.uniform(ids, stream)))
        angle = (2 * np.pi) * self.uniform(ids, stream + 1)
        return radius * np.cos(angle), radius * np.sin(angle)


def permuted_roots(indices: np.ndarray) -> np.ndarray:
    """Distinct MICrONS-like root ids of partner indices (a bijection of the low 40 bits)."""
    with np.errstate(over="ignore"):
        return ROOT_BASE + ((indices.astype(np.int64) * PERMUTE_A + PERMUTE_B) & MASK40)


@dataclass
class World:
    """What the synapses are drawn from: neurons (sorted by root id) and axon fragments."""

    synapses: int
    neuron_roots: np.ndarray  # sorted; neuron i's root
    somata: np.ndarray  # (n, 3) voxels
    starts: np.ndarray  # neuron i's inputs have ids starts[i] + 1 .. starts[i + 1]
    out_cum: np.ndarray  # cumulative out-degree weights of the neurons as presynaptic partners
    fragment_cum: np.ndarray  # cumulative weights of the axon fragments
    partner_rank: np.ndarray  # rank of each partner's root (neurons first, then fragments) among all
    proofread: np.ndarray  # neuron indices
    hasher: Hasher

    @property
    def neurons(self) -> int:
        return len(self.neuron_roots)

    @property
    def fragments(self) -> int:
        return len(self.fragment_cum)


def make_world(synapses: int, neurons: int | None, proofread: int, seed: int) -> World:
    rng = np.random.default_rng(seed)
    n = neurons or max(8, round(synapses / MEAN_IN_DEGREE))
    n = min(n, synapses)
    f = max(16, round(synapses * FRAGMENTS_PER_SYNAPSE))
    roots = permuted_roots(np.arange(n))
    order = np.argsort(roots)
    neuron_roots = roots[order]
    somata = np.round(rng.uniform(0.05, 0.95, size=(n, 3)) * BOX)
    # In-degree: lognormal (heavy-tailed), at least one input each, summing exactly to ``synapses``.
    weights = rng.lognormal(0.0, 0.7, size=n)
    share = weights / weights.sum() * (synapses - n)
    counts = np.floor(share).astype(np.int64) + 1
    remainder = synapses - int(counts.sum())
    counts[np.argsort(share - np.floor(share))[::-1][:remainder]] += 1
    starts = np.concatenate([[0], np.cumsum(counts)])
    out_cum = np.cumsum(rng.lognormal(0.0, 1.2, size=n))
    fragment_cum = np.cumsum(rng.lognormal(0.0, 1.5, size=f))
    # Partner index p: neurons 0..n-1 (in root order), fragments n..n+f-1.
    partner_roots = np.concatenate([neuron_roots, permuted_roots(np.arange(n, n + f))])
    rank = np.empty(n + f, dtype=np.int64)
    rank[np.argsort(partner_roots)] = np.arange(n + f)
    chosen = np.sort(rng.choice(n, size=min(proofread, n), replace=False))
    return World(synapses, neuron_roots, somata, starts, out_cum, fragment_cum, rank, chosen, Hasher(seed))


def partners(world: World, ids: np.ndarray) -> np.ndarray:
    """Each synapse's presynaptic partner index (neurons first, then fragments)."""
    h = world.hasher
    from_neuron = h.uniform(ids, 0) < FROM_NEURONS
    pick = h.uniform(ids, 1)
    out = np.empty(len(ids), dtype=np.int64)
    out[from_neuron] = np.searchsorted(world.out_cum, pick[from_neuron] * world.out_cum[-1])
    rest = ~from_neuron
    out[rest] = world.neurons + np.searchsorted(world.fragment_cum, pick[rest] * world.fragment_cum[-1])
    return out


def synapse_rows(world: World, ids: np.ndarray, partner: np.ndarray | None = None) -> pa.Table:
    """The synapse rows of ``ids`` (any order), in the frozen layout; ``partner``: their
    ``partners`` when known already."""
    h = world.hasher
    post = np.searchsorted(world.starts, ids - 1, side="right") - 1
    if partner is None:
        partner = partners(world, ids)
    is_neuron = partner < world.neurons
    pre_root = np.empty(len(ids), dtype=np.int64)
    pre_root[is_neuron] = world.neuron_roots[partner[is_neuron]]
    pre_root[~is_neuron] = permuted_roots(partner[~is_neuron])
    dx, dy = h.normals(ids, 4)
    dz, dsize = h.normals(ids, 6)
    post_xyz = world.somata[post] + np.round(np.stack([dx, dy, dz], axis=1) * DENDRITE_SIGMA)
    np.clip(post_xyz, 0, BOX - 1, out=post_xyz)
    jitter = h.bits(ids, 8)
    fields = [((jitter >> U64(10 * k)) & U64(1023)).astype(np.int64) for k in range(6)]
    ctr_xyz = post_xyz + np.stack([fields[0] % 7 - 3, fields[1] % 7 - 3, fields[2] % 3 - 1], axis=1)
    pre_xyz = ctr_xyz + np.stack([fields[3] % 7 - 3, fields[4] % 7 - 3, fields[5] % 3 - 1], axis=1)
    size = np.round(np.exp(np.log(2_500.0) + 1.0 * dsize)) + 20
    columns = {
        "id": ids.astype(np.int64),
        "valid": np.ones(len(ids), dtype=bool),
        "pre_pt_supervoxel_id": SV_BASE + (h.bits(ids, 2) >> U64(8)).astype(np.int64),
        "pre_pt_root_id": pre_root,
        "post_pt_supervoxel_id": SV_BASE + (h.bits(ids, 3) >> U64(8)).astype(np.int64),
        "post_pt_root_id": world.neuron_roots[post],
        "size": size,
    }
    for name, xyz in (("pre_pt_position", pre_xyz), ("post_pt_position", post_xyz), ("ctr_pt_position", ctr_xyz)):
        for axis, letter in enumerate("xyz"):
            columns[f"{name}_{letter}"] = np.ascontiguousarray(xyz[:, axis], dtype=np.float64)
    schema = frozen_layout("synapse").arrow_schema
    return pa.Table.from_arrays([pa.array(columns[f.name]) for f in schema], schema=schema)


# -- writing ------------------------------------------------------------------------------------------
def write_parquet(path: Path, chunks: Iterator[pa.Table], row_group_rows: int, dictionary: list[str], total: int, label: str) -> int:
    """Write ``chunks`` as one Parquet file under a temporary name, then rename it; its bytes.

    The next chunk is generated while the previous one is compressed and written (two cores)."""
    partial = path.with_name(path.name + f".partial-{os.getpid()}")
    schema = frozen_layout("synapse").arrow_schema
    writer = pq.ParquetWriter(
        partial, schema, compression=COMPRESSION, write_statistics=True, use_dictionary=dictionary
    )
    pending: Future | None = None
    with ThreadPoolExecutor(1) as pool, tqdm(total=total, unit="rows", unit_scale=True, desc=label, mininterval=5) as bar:
        for table in chunks:
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write_table, table, row_group_size=row_group_rows)
            bar.update(table.num_rows)
        if pending is not None:
            pending.result()
    writer.close()
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return path.stat().st_size


def id_order_chunks(world: World, kept: np.ndarray | None) -> Iterator[pa.Table]:
    """The rows in id order; each synapse's partner is kept in ``kept`` (indexed by id - 1) when
    given, so the pre-root copy need not draw them again."""
    for start in range(0, world.synapses, CHUNK):
        ids = np.arange(start + 1, min(start + CHUNK, world.synapses) + 1, dtype=np.int64)
        partner = partners(world, ids)
        if kept is not None:
            kept[start : start + len(ids)] = partner
        yield synapse_rows(world, ids, partner)


def pre_order_ids(world: World, kept: np.ndarray | None) -> np.ndarray:
    """All synapse ids sorted by (pre_pt_root_id, id), as one int64 array (8 bytes a synapse)."""
    id_bits = int(world.synapses).bit_length()
    rank_bits = int(len(world.partner_rank)).bit_length()
    if id_bits + rank_bits > 63:
        raise SystemExit(f"{world.synapses:,} synapses with {len(world.partner_rank):,} partners do not fit one 64-bit sort key")
    keys = np.empty(world.synapses, dtype=np.int64)
    for start in tqdm(range(0, world.synapses, CHUNK), desc="pre-root keys", unit="chunk", mininterval=5):
        ids = np.arange(start + 1, min(start + CHUNK, world.synapses) + 1, dtype=np.int64)
        partner = kept[start : start + len(ids)] if kept is not None else partners(world, ids)
        keys[start : start + len(ids)] = (world.partner_rank[partner] << id_bits) | ids
    began = time.perf_counter()
    keys.sort()
    keys &= (1 << id_bits) - 1
    print(f"sorted {world.synapses:,} (pre root, id) keys in {time.perf_counter() - began:.0f} s", flush=True)
    return keys


def pre_order_chunks(world: World, ordered: np.ndarray, kept: np.ndarray | None) -> Iterator[pa.Table]:
    for start in range(0, world.synapses, CHUNK):
        ids = ordered[start : start + CHUNK]
        yield synapse_rows(world, ids, kept[ids - 1] if kept is not None else None)


def small_tables(world: World) -> dict[str, tuple[str, pa.Table]]:
    """``nucleus_detection`` (every neuron) and ``proofreading_status`` (the proofread ones)."""
    rng = np.random.default_rng(int(world.hasher.keys[15] % (1 << 32)))
    n = world.neurons
    somata = world.somata
    half_box = np.array([1_500.0, 1_500.0, 150.0])
    nucleus = {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "valid": np.ones(n, dtype=bool),
        "pt_supervoxel_id": SV_BASE + rng.integers(0, 1 << 52, size=n),
        "pt_root_id": world.neuron_roots,
        "volume": np.round(rng.lognormal(np.log(250.0), 0.3, size=n), 3),
    }
    for prefix, xyz in (("pt_position", somata), ("bb_start_position", somata - half_box), ("bb_end_position", somata + half_box)):
        for axis, letter in enumerate("xyz"):
            nucleus[f"{prefix}_{letter}"] = np.ascontiguousarray(xyz[:, axis])
    chosen = world.proofread
    p = len(chosen)
    strategies = np.array(["axon_fully_extended", "axon_partially_extended", "axon_column_truncated"])
    proofread = {
        "id": np.arange(1, p + 1, dtype=np.int64),
        "valid": np.ones(p, dtype=bool),
        "pt_supervoxel_id": nucleus["pt_supervoxel_id"][chosen],
        "pt_root_id": world.neuron_roots[chosen],
        "valid_id": world.neuron_roots[chosen],
        "status_dendrite": np.ones(p, dtype=bool),
        "status_axon": np.ones(p, dtype=bool),
        "strategy_dendrite": np.full(p, "dendrite_extended"),
        "strategy_axon": strategies[rng.integers(0, len(strategies), size=p)],
    }
    for axis, letter in enumerate("xyz"):
        proofread[f"pt_position_{letter}"] = np.ascontiguousarray(somata[chosen, axis])
    out = {}
    for name, schema_name, columns in (
        ("nucleus_detection", "nucleus_detection", nucleus),
        ("proofreading_status", "compartment_proofread_status_strategy", proofread),
    ):
        schema = frozen_layout(schema_name).arrow_schema
        out[name] = (schema_name, pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema))
    return out


# -- registration -----------------------------------------------------------------------------------------
def register_datastack(runtime, name: str) -> None:
    """The datastack's dataset, aligned volume and info record (like the demo's); idempotent."""
    from opencave.services.auth import DEFAULT_GROUP

    with suppress(Conflict):
        runtime.access.create_dataset(name)
    with suppress(Conflict):
        runtime.info.add_aligned_volume(name, image_source="", description="Synthetic MICrONS-scale volume (benchmarks).")
    with suppress(Conflict):
        runtime.info.add_datastack(
            name,
            name,
            display_name=name.replace("_", " "),
            description="Synthetic MICrONS-scale connectome: ~100,000 neurons, hundreds of millions of synapses.",
            synapse_table="synapses",
            soma_table="nucleus_detection",
            proofreading_status_table="proofreading_status",
            viewer_resolution_x=RESOLUTION[0],
            viewer_resolution_y=RESOLUTION[1],
            viewer_resolution_z=RESOLUTION[2],
        )
    runtime.access.map_resource("datastack", name, name)
    runtime.access.map_resource("aligned_volume", name, name)
    runtime.access.grant(DEFAULT_GROUP, name, "view")


def publish(runtime, name: str, work: Path, tables: dict[str, tuple[str, int]], say: Callable[[str], None]) -> int:
    """Register a version of ``name`` whose complete files are in ``work``; its number.

    The files are moved (renamed) into the version's folder, the post-root copy of the synapses
    linked to their id-sorted file, the small tables' copies built, the manifest written; only
    then is the version published."""
    registry = runtime.materializer.registry
    moment = datetime.now(timezone.utc)
    version = registry.begin(name, moment, None, runtime.settings.versions_location)
    directory = Path(version.location)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with registry.keep_alive(version.id):
            for item in sorted(work.iterdir()):
                os.replace(item, directory / item.name)
            os.link(directory / SYNAPSE_FILE, directory / clustered_name(SYNAPSE_FILE, "post_pt_root_id"))
            volume = runtime.info.aligned_volume_of(name)
            for table_name, (schema, rows) in tables.items():
                file = f"{table_name}.parquet"
                if table_name != "synapses":
                    clustering.ensure_clustered(directory, file, frozen_layout(schema).root_columns)
                source = SourceTable(table_name, "table", [], schema, {"description": f"Synthetic {table_name} (MICrONS-scale benchmark)."})
                registry.add_table(
                    version.id,
                    FrozenTable(
                        kind="table",
                        table_name=table_name,
                        schema=schema,
                        row_count=rows,
                        file=file,
                        created=moment,
                        metadata=table_metadata(source, schema, volume, RESOLUTION, moment, name),
                    ),
                )
            write_version_manifest(directory, version, registry.tables(version, "table"))
        registry.publish(version.id)
    except BaseException as error:
        registry.fail(version.id, f"{type(error).__name__}: {error}")
        raise
    say(f"version {version.version} of {name} published at {directory}")
    return version.version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="/tmp/opencave-microns")
    parser.add_argument("--datastack", default=DATASTACK)
    parser.add_argument("--synapses", type=int, default=300_000_000)
    parser.add_argument("--neurons", type=int, default=None, help=f"default: synapses / {MEAN_IN_DEGREE:,}")
    parser.add_argument("--proofread", type=int, default=2_000, help="neurons in proofreading_status")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--main-row-group-rows",
        type=int,
        default=CLUSTERED_ROW_GROUP_ROWS,
        help="row groups of the id-sorted file; it is also the post-root copy, so by default the copies' size "
        f"({CLUSTERED_ROW_GROUP_ROWS:,}; a frozen file's usual size is {ROW_GROUP_ROWS:,})",
    )
    parser.add_argument("--no-demo", action="store_true", help="do not set up the demo datastack (serve does it on its first start)")
    args = parser.parse_args(argv)
    from opencave.runtime import Runtime

    began = time.perf_counter()
    settings = resolve_settings(args.data_dir)
    runtime = Runtime.open(settings)
    first = runtime.initialise(with_demo=not args.no_demo)
    if first is not None:
        print(f"set up a new opencave store; admin login: {first.admin_email} password: {first.admin_password}", file=sys.stderr)
    register_datastack(runtime, args.datastack)
    setup_s = time.perf_counter() - began

    world = make_world(args.synapses, args.neurons, args.proofread, args.seed)
    print(
        f"{world.synapses:,} synapses onto {world.neurons:,} neurons from {world.neurons:,} neurons and "
        f"{world.fragments:,} axon fragments; {len(world.proofread):,} proofread",
        flush=True,
    )
    work = Path(settings.version_root) / f".{args.datastack}-building-{args.synapses}-{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    timings: dict[str, float] = {}
    main_file = work / SYNAPSE_FILE
    start = time.perf_counter()
    # Each synapse's partner (4 bytes), drawn once while the id-sorted file is written; None
    # when that file is there already (a resumed run draws them again).
    kept = None
    if not main_file.exists():
        kept = np.empty(world.synapses, dtype=np.int32 if len(world.partner_rank) < 2**31 else np.int64)
        sizes["synapses"] = write_parquet(main_file, id_order_chunks(world, kept), args.main_row_group_rows, ["valid", "post_pt_root_id"], world.synapses, "synapses (by id = by post root)")
    sizes["synapses"] = main_file.stat().st_size
    timings["main_file_s"] = time.perf_counter() - start
    by_pre = work / clustered_name(SYNAPSE_FILE, "pre_pt_root_id")
    start = time.perf_counter()
    if not by_pre.exists():
        ordered = pre_order_ids(world, kept)
        write_parquet(by_pre, pre_order_chunks(world, ordered, kept), CLUSTERED_ROW_GROUP_ROWS, ["valid", "pre_pt_root_id"], world.synapses, "synapses by pre root")
        del ordered
    del kept
    sizes["synapses_by_pre"] = by_pre.stat().st_size
    timings["pre_copy_s"] = time.perf_counter() - start
    tables: dict[str, tuple[str, int]] = {"synapses": ("synapse", world.synapses)}
    for name, (schema, table) in small_tables(world).items():
        pq.write_table(table, work / f"{name}.parquet", row_group_size=ROW_GROUP_ROWS, compression=COMPRESSION, write_statistics=True)
        tables[name] = (schema, table.num_rows)
    number = publish(runtime, args.datastack, work, tables, print)
    work.rmdir()
    total_s = time.perf_counter() - began
    summary = {
        "datastack": args.datastack,
        "version": number,
        "synapses": world.synapses,
        "neurons": world.neurons,
        "axon_fragments": world.fragments,
        "proofread": len(world.proofread),
        "seed": args.seed,
        "bytes": sizes,
        "setup_s": round(setup_s, 1),
        **{k: round(v, 1) for k, v in timings.items()},
        "total_s": round(total_s, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
