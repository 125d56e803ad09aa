"""How supervoxels join into the objects a segmentation starts with.

Three inputs say it: none (a *flat* segmentation, each label one object), a mapping
``supervoxel → segment`` (``--agglomeration``), or an edge list ``sv1, sv2, affinity[, area]``
with an optional merge threshold (``--edges``). All name the segmentation's own labels. The
result is the graph's edge table over chunk-local supervoxels: every face contact of the volume
(with its area), the file's edges that are not contacts, and which edges start active. Pieces of
one label in different chunks are always joined; pieces of one object that touch nowhere are
joined by an edge of area 0 (PyChunkedGraph's "fake" edges), so every object starts as one root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from opencave.errors import BadRequest

JOINED = np.float32(1.0)  # affinity of the edges that hold one label or one segment together
APART = np.float32(0.0)  # affinity of contacts between objects that nothing joins
MAPPING_COLUMNS = ("supervoxel", "segment")
EDGE_COLUMNS = ("sv1", "sv2", "affinity")


@dataclass(frozen=True)
class Contacts:
    """Face contacts between supervoxels (indices into the canonical supervoxel order)."""

    a: np.ndarray  # int64, a < b
    b: np.ndarray
    area: np.ndarray  # int64 shared voxel faces


@dataclass(frozen=True)
class GraphEdges:
    a: np.ndarray  # int64 supervoxel indices, a < b
    b: np.ndarray
    affinity: np.ndarray  # float32
    area: np.ndarray  # int64
    active: np.ndarray  # bool


LABEL_COLUMNS = ("supervoxel", "segment", "sv1", "sv2")


def read_table(path: str, what: str) -> dict[str, np.ndarray]:
    """Columns of a Parquet, CSV (optionally gzipped) or ``.npz`` file, by name; label columns
    of a CSV are read as uint64 (a text reader would take labels above 2**63 for floats)."""
    import fsspec
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    name = Path(path.split("?")[0]).name.lower()
    try:
        if name.endswith(".npz"):
            with fsspec.open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                return {key: np.asarray(data[key]) for key in data.files}
        if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            options = pa_csv.ParseOptions(delimiter="\t" if ".tsv" in name else ",")
            with fsspec.open(path, "rb", compression="infer") as handle:
                table = pa_csv.read_csv(
                    handle, parse_options=options, convert_options=pa_csv.ConvertOptions(column_types={c: pa.uint64() for c in LABEL_COLUMNS})
                )
        elif name.endswith((".parquet", ".pq")):
            with fsspec.open(path, "rb") as handle:
                table = pq.read_table(handle)
        else:
            raise BadRequest(f"The {what} {path} is not a .parquet, .csv, .csv.gz or .npz file.", code="unknown_format")
    except BadRequest:
        raise
    except FileNotFoundError as error:
        raise BadRequest(f"The {what} {path} does not exist.", code="missing_file") from error
    except Exception as error:
        raise BadRequest(f"Could not read the {what} {path}: {type(error).__name__}: {error}", code="unreadable_file") from error
    return {column: table.column(column).to_numpy() for column in table.column_names}


def _labels(columns: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    values = columns[name]
    if values.dtype.kind not in "iu":
        raise BadRequest(f"Column {name!r} of the {what} holds {values.dtype} values; it needs whole-number labels.", code="bad_column")
    if values.dtype.kind == "i" and values.size and values.min() <= 0:
        raise BadRequest(f"Column {name!r} of the {what} holds a label ≤ 0 (row {int(np.argmax(values <= 0)) + 1}); labels are positive.", code="bad_column")
    return values.astype(np.uint64)


def _require(columns: dict[str, np.ndarray], names: tuple[str, ...], what: str, path: str) -> None:
    missing = [n for n in names if n not in columns]
    if missing:
        raise BadRequest(
            f"The {what} {path} has no column {', '.join(map(repr, missing))}; it needs {', '.join(names)} (it has {', '.join(columns) or 'none'}).",
            code="bad_column",
        )
    lengths = {columns[n].shape[0] for n in names}
    if len(lengths) > 1:
        raise BadRequest(f"The columns of the {what} {path} differ in length.", code="bad_column")


def _examples(values: np.ndarray) -> str:
    shown = ", ".join(str(int(v)) for v in values[:5])
    return shown + (f" and {values.size - 5:,} more" if values.size > 5 else "")


@dataclass(frozen=True)
class Mapping:
    """An agglomeration file: supervoxel labels ascending and the segment of each."""

    path: str
    supervoxel: np.ndarray
    segment: np.ndarray

    @classmethod
    def read(cls, path: str) -> "Mapping":
        what = "agglomeration"
        columns = read_table(path, what)
        _require(columns, MAPPING_COLUMNS, what, path)
        sv, segment = _labels(columns, "supervoxel", what), _labels(columns, "segment", what)
        order = np.argsort(sv, kind="stable")
        sv, segment = sv[order], segment[order]
        repeated = np.flatnonzero((sv[1:] == sv[:-1]) & (segment[1:] != segment[:-1]))
        if repeated.size:
            raise BadRequest(f"The agglomeration {path} gives supervoxels {_examples(sv[repeated])} more than one segment.", code="bad_mapping")
        return cls(path, sv, segment)

    def segments_of(self, volume_labels: np.ndarray) -> np.ndarray:
        """Segment of each of ``volume_labels`` (ascending); every one must be mapped."""
        sv = self.supervoxel
        at = np.minimum(np.searchsorted(sv, volume_labels), max(sv.size - 1, 0))
        found = sv[at] == volume_labels if sv.size else np.zeros(volume_labels.size, bool)
        if not found.all():
            raise BadRequest(
                f"The agglomeration {self.path} has gaps: {int((~found).sum()):,} labels of the watershed have no segment "
                f"({_examples(volume_labels[~found])}). Map every label of the volume.",
                code="mapping_gaps",
            )
        return self.segment[at]


def read_edges(path: str) -> pd.DataFrame:
    """The edge file as label pairs (``lo < hi``), affinity and area (-1 where not given)."""
    what = "edge file"
    columns = read_table(path, what)
    _require(columns, EDGE_COLUMNS, what, path)
    a, b = _labels(columns, "sv1", what), _labels(columns, "sv2", what)
    affinity = np.asarray(columns["affinity"], dtype=np.float64)
    if not np.isfinite(affinity).all():
        raise BadRequest(f"The edge file {path} holds an affinity that is not a finite number (row {int(np.argmin(np.isfinite(affinity))) + 1}).", code="bad_column")
    area = np.asarray(columns["area"], dtype=np.int64) if "area" in columns else np.full(a.size, -1, dtype=np.int64)
    keep = a != b
    frame = pd.DataFrame(
        {"lo": np.minimum(a, b)[keep], "hi": np.maximum(a, b)[keep], "affinity": affinity[keep], "file_area": area[keep]}
    )
    frame.attrs["path"] = path
    # one row per pair: the highest affinity wins, as a region graph's mean/max would
    return frame.sort_values("affinity", ascending=False, kind="stable").drop_duplicates(["lo", "hi"]).reset_index(drop=True)


def check_edges(edges: pd.DataFrame, volume_labels: np.ndarray) -> None:
    """Refuse an edge file naming labels the watershed does not hold."""
    named = np.unique(np.concatenate([edges["lo"].to_numpy(), edges["hi"].to_numpy()]))
    unknown = named[~np.isin(named, volume_labels)]
    if unknown.size:
        raise BadRequest(
            f"The edge file {edges.attrs.get('path', '')} names {unknown.size:,} supervoxels that are not in the watershed ({_examples(unknown)}).",
            code="unknown_supervoxels",
        )


def _first_piece(sv_label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each distinct label ascending, the index of its first supervoxel)."""
    order = np.argsort(sv_label, kind="stable")
    labels, first = np.unique(sv_label[order], return_index=True)
    return labels, order[first]


def graph_edges(
    sv_label: np.ndarray,
    contacts: Contacts,
    segment_of_label: np.ndarray | None = None,
    edges: pd.DataFrame | None = None,
    threshold: float | None = None,
) -> GraphEdges:
    """The graph's edges and their initial state.

    ``segment_of_label`` (aligned with ``np.unique(sv_label)``) joins by segment; ``edges``
    joins the file's pairs with affinity above ``threshold`` (all of them without one); with
    neither, each label is one object.
    """
    labels, first = _first_piece(sv_label)
    la, lb = sv_label[contacts.a], sv_label[contacts.b]
    a, b, area = contacts.a, contacts.b, contacts.area
    affinity = np.where(la == lb, JOINED, APART).astype(np.float32)
    if edges is None:
        segment = segment_of_label if segment_of_label is not None else labels
        sv_group = segment[np.searchsorted(labels, sv_label)]
        active = sv_group[a] == sv_group[b]
        affinity[active] = JOINED
    else:
        sv_group = sv_label
        found = pd.DataFrame({"lo": np.minimum(la, lb), "hi": np.maximum(la, lb), "edge": np.arange(a.size)}).merge(
            edges, on=["lo", "hi"], how="inner"
        )
        at = found["edge"].to_numpy()
        affinity[at] = found["affinity"].to_numpy(dtype=np.float32)
        listed = np.zeros(a.size, bool)
        listed[at] = True
        active = (la == lb) | (listed & (affinity > threshold if threshold is not None else True))
        affinity[la == lb] = JOINED
        extra = edges[~edges.set_index(["lo", "hi"]).index.isin(found.set_index(["lo", "hi"]).index)]
        if len(extra):  # listed pairs that touch nowhere in the volume
            ea = first[np.searchsorted(labels, extra["lo"].to_numpy())]
            eb = first[np.searchsorted(labels, extra["hi"].to_numpy())]
            e_aff = extra["affinity"].to_numpy(dtype=np.float32)
            a, b = np.concatenate([a, np.minimum(ea, eb)]), np.concatenate([b, np.maximum(ea, eb)])
            affinity = np.concatenate([affinity, e_aff])
            area = np.concatenate([area, np.maximum(extra["file_area"].to_numpy(), 0)])
            active = np.concatenate([active, e_aff > threshold if threshold is not None else np.ones(len(extra), bool)])
        file_area = np.full(a.size, -1, dtype=np.int64)
        file_area[at] = found["file_area"].to_numpy()
        area = np.where(file_area >= 0, file_area, area)
    ja, jb = _joins(sv_group, a[active], b[active])
    return GraphEdges(
        a=np.concatenate([a, ja]),
        b=np.concatenate([b, jb]),
        affinity=np.concatenate([affinity, np.full(ja.size, JOINED, np.float32)]),
        area=np.concatenate([area, np.zeros(ja.size, np.int64)]),
        active=np.concatenate([active, np.ones(ja.size, bool)]),
    )


def _joins(sv_group: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges chaining the separate pieces of each group (same value of ``sv_group``)."""
    n = sv_group.size
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    pieces = pd.DataFrame({"group": sv_group, "component": component, "sv": np.arange(n)})
    heads = pieces.drop_duplicates(["group", "component"]).sort_values(["group", "sv"], kind="stable")
    group, sv = heads["group"].to_numpy(), heads["sv"].to_numpy()
    chained = np.flatnonzero(group[1:] == group[:-1])
    lo, hi = sv[chained], sv[chained + 1]
    return np.minimum(lo, hi), np.maximum(lo, hi)
