"""The chunkedgraph (PyChunkedGraph) client: supervoxel → root lookups, edit history, proofreading.

Requests are those caveclient 8.2.1 makes, down to parameter spellings (``priority=False``,
``operation_ids=[1, 2]``), float POSIX timestamps, raw uint64 bodies and JSON bodies on GETs,
because deployed chunkedgraph servers parse exactly those. Where caveclient has a clear bug,
the method's docstring says how this client differs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from packaging.version import Version

from ..wire import node_ids as node_id_codec
from ..wire.endpoints import CHUNKEDGRAPH
from ..wire.json_encoding import dumps
from .auth import AuthClient
from .base import (
    ServiceClient,
    check_version_compatibility,
    handle_response,
)
from .session import Timeout

if TYPE_CHECKING:  # networkx is optional, needed only for ``as_nx_graph=True``
    import networkx as nx


logger = logging.getLogger(__name__)

IntArrayLike = int | np.integer | np.ndarray | pd.Series | pd.Index | list[int]

JSON_HEADERS = {"Content-Type": "application/json"}
BINARY_ANSWER = {"Accept": "application/octet-stream, application/json;q=0.9"}
# Root timestamps with ``latest``/``timestamp`` need a server that understands them.
ROOT_TIMESTAMP_CONSTRAINT = ["<2,>=1.25.0", "<3,>=2.17.0", "<4,>=3.0.4"]
# The default lower bound of ``is_valid_nodes``: before any CAVE segmentation existed.
VALID_NODES_START = datetime(2000, 1, 1)
# suggest_latest_roots compares chunks this many layers below the root layer.
DELTA_LAYERS = 4

_NX_HINT = "as_nx_graph=True needs networkx: pip install networkx"


# --------------------------------------------------------------------------------------------
# Request encoding


def package_bounds(bounds: Any) -> str:
    """Encode a 3×2 ``[[minx, maxx], [miny, maxy], [minz, maxz]]`` box as ``"minx-maxx_..."``."""
    bounds = np.asarray(bounds)
    if bounds.shape != (3, 2):
        raise ValueError(
            "Bounds must be a 3x2 matrix (x,y,z) x (min,max) in chunkedgraph resolution voxel units"
        )
    return "_".join("-".join(str(v) for v in axis) for axis in bounds)


def _as_utc(timestamp: datetime) -> datetime:
    """Naive datetimes are UTC on the wire, as in caveclient."""
    if timestamp.tzinfo is None:
        return timestamp.replace(tzinfo=UTC)
    return timestamp.astimezone(UTC)


def package_timestamp(timestamp: datetime | None, name: str = "timestamp") -> dict[str, float]:
    """``{name: POSIX seconds}`` for a query string, ``{}`` for None."""
    if timestamp is None:
        return {}
    return {name: _as_utc(timestamp).timestamp()}


def package_split_data(
    root_id: int,
    source_points: Any,
    sink_points: Any,
    source_supervoxels: Any,
    sink_supervoxels: Any,
) -> dict[str, list[list[Any]]]:
    """The ``{"sources": [[sv, x, y, z], ...], "sinks": [...]}`` body of split requests.

    A point without a supervoxel is sent with ``root_id`` in its place, which the server
    resolves to the supervoxel under the point.
    """
    for points, supervoxels in ((source_points, source_supervoxels), (sink_points, sink_supervoxels)):
        if supervoxels is not None and len(points) != len(supervoxels):
            raise ValueError("If supervoxels are provided, they must have the same length as points")
    data = {}
    for category, points, supervoxels in (
        ("sources", source_points, source_supervoxels),
        ("sinks", sink_points, sink_supervoxels),
    ):
        if supervoxels is None:
            supervoxels = [None] * len(points)
        data[category] = [
            [root_id if sv is None else sv, pt[0], pt[1], pt[2]] for sv, pt in zip(supervoxels, points)
        ]
    return data


def root_id_int_list_check(root_id: Any, make_unique: bool = False) -> list[Any] | np.ndarray:
    """Normalise one id or many into a list/uint64 array for a JSON body.

    A numeric string becomes a one-element list (caveclient sends it as a bare number, which
    servers expecting a list reject); any numpy integer is accepted as a single id.
    """
    if isinstance(root_id, (int, np.integer)):
        return [root_id]
    if isinstance(root_id, str):
        try:
            return [np.uint64(root_id)]
        except ValueError:
            raise ValueError(
                "When passing a string for 'root_id' make sure the string can be converted to a uint64"
            ) from None
    if isinstance(root_id, (list, tuple, np.ndarray, pd.Series, pd.Index)):
        ids = np.array(root_id, dtype=np.uint64)
        return np.unique(ids) if make_unique else ids
    raise ValueError("root_id has to be list or uint64")


def _lineage_degrees(graph: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node ids with their in- and out-degrees, in the node order networkx would give.

    ``get_latest_roots``/``get_original_roots`` only need degrees, so they work without
    networkx. As in a ``DiGraph``, repeated links count once.
    """
    order: dict[Any, None] = {node["id"]: None for node in graph["nodes"]}
    edges: dict[tuple[Any, Any], None] = {}
    for link in graph["links"]:
        order.setdefault(link["source"])
        order.setdefault(link["target"])
        edges.setdefault((link["source"], link["target"]))
    in_degree = dict.fromkeys(order, 0)
    out_degree = dict.fromkeys(order, 0)
    for source, target in edges:
        out_degree[source] += 1
        in_degree[target] += 1
    return np.array(list(order)), np.array(list(in_degree.values())), np.array(list(out_degree.values()))


# --------------------------------------------------------------------------------------------
# Client


class ChunkedGraphClient(ServiceClient):
    """Client of a PyChunkedGraph server (``client.chunkedgraph``).

    The API version is negotiated through ``GET /segmentation/api/versions`` and the server
    version read from ``/segmentation/api/version``. Methods that take a timestamp default to
    the ``timestamp`` property, then to the current time.
    """

    service = CHUNKEDGRAPH

    def __init__(
        self,
        server_address: str | None = None,
        table_name: str | None = None,
        auth_client: AuthClient | None = None,
        api_version: int | str = "latest",
        timestamp: datetime | None = None,
        verify: bool | str = True,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        over_client: Any = None,
        timeout: Timeout | None = None,
    ):
        super().__init__(
            server_address,
            auth_client,
            api_version,
            verify=verify,
            max_retries=max_retries,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
            over_client=over_client,
            timeout=timeout,
        )
        self._default_url_mapping["table_id"] = table_name
        self._table_name = table_name
        self._default_timestamp = timestamp
        self._segmentation_info: dict[str, Any] | None = None
        self._node_id_layout: node_id_codec.NodeIdLayout | None = None

    @property
    def table_name(self) -> str | None:
        """The chunkedgraph table (the last part of the datastack's segmentation source)."""
        return self._table_name

    # -- timestamps ------------------------------------------------------------------------

    @property
    def timestamp(self) -> datetime | None:
        """Default time for queries that take one; None means "now".

        The CAVEclient's timestamp (set with its materialization version) takes precedence,
        so chunkedgraph answers match the materialized data being queried.
        """
        framework_timestamp = getattr(self.fc, "timestamp", None)
        return framework_timestamp if framework_timestamp is not None else self._default_timestamp

    @timestamp.setter
    def timestamp(self, value: datetime | None) -> None:
        if getattr(self.fc, "timestamp", None) is not None:
            raise ValueError(
                "Cannot set `timestamp` when attached to a CAVEclient with a version, "
                "set a version at the CAVEclient level instead."
            )
        if value is not None and not isinstance(value, datetime):
            raise TypeError("`timestamp` must be a datetime object or None.")
        self._default_timestamp = value

    def _process_timestamp(self, timestamp: datetime | None) -> datetime:
        """The given timestamp, else the ``timestamp`` property, else now (UTC)."""
        if timestamp is not None:
            return timestamp
        if self.timestamp is not None:
            return self.timestamp
        return datetime.now(UTC)

    # -- roots and leaves ------------------------------------------------------------------

    def get_roots(
        self,
        supervoxel_ids: Sequence[int] | np.ndarray,
        timestamp: datetime | None = None,
        stop_layer: int | None = None,
    ) -> np.ndarray:
        """Root id (or the ancestor at ``stop_layer``) of each supervoxel, as uint64.

        Ids travel as raw little-endian uint64 in both directions: exact, and compact for
        millions of ids.
        """
        params: dict[str, Any] = package_timestamp(self._process_timestamp(timestamp))
        if stop_layer is not None:
            params["stop_layer"] = stop_layer
        data = np.array(supervoxel_ids, dtype=np.uint64).tobytes()
        response = handle_response(self.session.post(self._url("get_roots"), data=data, params=params), as_json=False)
        return np.frombuffer(response.content, dtype=np.uint64)

    def get_root_id(self, supervoxel_id: int, timestamp: datetime | None = None, level2: bool = False) -> np.int64:
        """Root id of one supervoxel (its level-2 parent with ``level2=True``)."""
        params: dict[str, Any] = package_timestamp(self._process_timestamp(timestamp))
        if level2:
            params["stop_layer"] = 2
        url = self._url("handle_root", supervoxel_id=supervoxel_id)
        return np.int64(handle_response(self.session.get(url, params=params))["root_id"])

    def get_label_roots(self, label: int, timestamp: datetime | None = None, return_voxels: bool = False) -> Any:
        """Roots holding an original label of an ingested segmentation, the largest share first
        (one root until an edit splits the label's supervoxels apart); with ``return_voxels``,
        also the label's voxel count in each. opencave only."""
        found = self._label_lookup(label, timestamp)
        roots = np.asarray(found["root_ids"], dtype=np.uint64)
        return (roots, np.asarray(found["voxels"], dtype=np.int64)) if return_voxels else roots

    def get_label_supervoxels(self, label: int) -> np.ndarray:
        """The supervoxels an original label of an ingested segmentation became (uint64). opencave only."""
        return np.asarray(self._label_lookup(label, None)["supervoxel_ids"], dtype=np.uint64)

    def _label_lookup(self, label: int, timestamp: datetime | None) -> dict[str, Any]:
        params: dict[str, Any] = package_timestamp(self._process_timestamp(timestamp))
        return handle_response(self.session.get(self._url("label_roots", label=int(label)), params=params))

    @check_version_compatibility(method_constraint=["<3,>=2.18.0", "<4,>=3.0.5"])
    def get_minimal_covering_nodes(self, node_ids: IntArrayLike) -> np.ndarray:
        """The fewest chunkedgraph nodes that together cover exactly ``node_ids`` (uint64).

        Unlike caveclient, the HTTP status is checked: an error body is raised as an error
        rather than decoded as ids.
        """
        response = self.session.post(
            self._url("minimal_covering_nodes"),
            data=dumps({"node_ids": node_ids}),
            params={"as_array": True},
            headers=JSON_HEADERS,
        )
        handle_response(response, as_json=False)
        return np.frombuffer(response.content, dtype=np.uint64)

    def get_leaves(self, root_id: int, bounds: Any = None, stop_layer: int | None = None) -> np.ndarray:
        """Supervoxels (or nodes at ``stop_layer``) of a root, optionally inside a 3×2 box of
        chunkedgraph voxels."""
        params = self._leaves_params(bounds, stop_layer)
        url = self._url("leaves_from_root", root_id=root_id)
        # opencave servers answer raw ids when asked (no JSON to make and parse); others, JSON.
        response = handle_response(self.session.get(url, params=params, headers=BINARY_ANSWER), as_json=False)
        if response.headers.get("Content-Type", "").startswith("application/octet-stream"):
            return np.frombuffer(response.content, dtype="<u8").astype(np.int64)
        return np.int64(response.json()["leaf_ids"])

    def get_leaves_many(
        self, root_ids: IntArrayLike, bounds: Any = None, stop_layer: int | None = None
    ) -> dict[np.int64, np.ndarray]:
        """``get_leaves`` for many roots in one request: ``{root: leaves}``."""
        params = self._leaves_params(bounds, stop_layer)
        response = self.session.post(
            self._url("leaves_many"), data=dumps({"node_ids": root_ids}), params=params, headers=JSON_HEADERS
        )
        return {np.int64(k): np.int64(v) for k, v in handle_response(response).items()}

    @staticmethod
    def _leaves_params(bounds: Any, stop_layer: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if bounds is not None:
            params["bounds"] = package_bounds(bounds)
        if stop_layer is not None:
            params["stop_layer"] = int(stop_layer)
        return params

    def get_children(self, node_id: int) -> np.ndarray:
        """Child node ids of a node, as int64."""
        # The legacy (v0) template names the node ``node_id``, v1 ``root_id``.
        url = self._url("handle_children", root_id=node_id, node_id=node_id)
        return np.array(handle_response(self.session.get(url))["children_ids"], dtype=np.int64)

    # -- edit history ----------------------------------------------------------------------

    def get_merge_log(self, root_id: int) -> list:
        """Merges in the history of an object, as the server reports them."""
        return handle_response(self.session.get(self._url("merge_log", root_id=root_id)))

    def get_change_log(self, root_id: int, filtered: bool = True) -> dict:
        """Summary of an object's edits: counts, operation ids, past ids, edits per user.

        ``filtered`` keeps only edits that shaped the current object.
        """
        url = self._url("change_log", root_id=root_id)
        return handle_response(self.session.get(url, params={"filtered": filtered}))

    def get_user_operations(
        self,
        user_id: int,
        timestamp_start: datetime,
        include_undo: bool = True,
        timestamp_end: datetime | None = None,
    ) -> pd.DataFrame:
        """Operations of a user (0: all users; admins only) as a DataFrame with UTC
        ``timestamp``s.

        Unlike caveclient, ``include_undo`` is also sent when a user is given (caveclient drops
        it then), and an empty answer gives an empty DataFrame rather than a KeyError.
        """
        params: dict[str, Any] = {"include_undo": include_undo}
        if user_id > 0:
            params["user_id"] = user_id
        if timestamp_start is not None:
            params.update(package_timestamp(self._process_timestamp(timestamp_start), "start_time"))
        if timestamp_end is not None:
            params.update(package_timestamp(self._process_timestamp(timestamp_end), "end_time"))
        df = pd.DataFrame(handle_response(self.session.get(self._url("user_operations"), params=params)))
        if "timestamp" in df.columns:
            df["timestamp"] = df["timestamp"].map(lambda ms: datetime.fromtimestamp(ms / 1000, UTC))
        return df

    def get_tabular_change_log(self, root_ids: IntArrayLike, filtered: bool = True) -> dict[int, pd.DataFrame]:
        """Per root, a DataFrame of the operations in its history (``timestamp`` in ms)."""
        root_ids = [int(r) for r in np.unique(root_ids)]
        response = self.session.get(
            self._url("tabular_change_log"), data=dumps({"root_ids": root_ids}), params={"filtered": filtered}
        )
        return {int(k): pd.DataFrame(json.loads(v)) for k, v in handle_response(response).items()}

    def get_operation_details(self, operation_ids: IntArrayLike) -> dict[str, dict]:
        """Details of operations, keyed by operation id (a string).

        The ids go in the query string as a Python list literal (``operation_ids=[1, 2]``),
        the form chunkedgraph servers parse. Unlike caveclient, numpy ids and a single id
        are also sent in that form.
        """
        ids = [int(i) for i in np.atleast_1d(np.asarray(operation_ids))]
        url = self._url("operation_details") + "?" + urlencode({"operation_ids": ids})
        return handle_response(self.session.get(url))

    def get_lineage_graph(
        self,
        root_id: int,
        timestamp_past: datetime | None = None,
        timestamp_future: datetime | None = None,
        as_nx_graph: bool = False,
        exclude_links_to_future: bool = False,
        exclude_links_to_past: bool = False,
    ) -> dict | nx.DiGraph:
        """The graph of root ids an object went through (node-link dict or ``nx.DiGraph``).

        ``timestamp_future`` defaults to the ``timestamp`` property (when set); the server's
        default is now. caveclient sends a stray ``name=timestamp_future`` instead; this
        client sends ``timestamp_future``, which servers accept too. The ``exclude_links_*``
        options drop nodes created outside ``[timestamp_past, timestamp_future]``, using that
        default too (caveclient cuts nothing in the future unless ``timestamp_future`` is given).
        Naive timestamps count as UTC here as on the wire.
        """
        root_ids = root_id_int_list_check(root_id, make_unique=True)
        if timestamp_future is None:
            timestamp_future = self.timestamp
        params = {
            **package_timestamp(timestamp_past, name="timestamp_past"),
            **package_timestamp(timestamp_future, name="timestamp_future"),
        }
        url = self._url("handle_lineage_graph")
        response = self.session.post(url, data=dumps({"root_ids": root_ids}), params=params)
        graph = handle_response(response)

        past = _as_utc(timestamp_past) if exclude_links_to_past and timestamp_past is not None else None
        future = _as_utc(timestamp_future) if exclude_links_to_future and timestamp_future is not None else None
        if past is not None or future is not None:
            excluded = set()
            for node in graph["nodes"]:
                created = datetime.fromtimestamp(node["timestamp"], UTC)
                if (past is not None and created < past) or (future is not None and created > future):
                    excluded.add(node["id"])
            graph["nodes"] = [node for node in graph["nodes"] if node["id"] not in excluded]
            graph["links"] = [
                link for link in graph["links"] if link["source"] not in excluded and link["target"] not in excluded
            ]

        if not as_nx_graph:
            return graph
        try:
            import networkx as nx
        except ImportError as err:
            raise ImportError(_NX_HINT) from err
        if Version(nx.__version__) >= Version("3.4"):
            return nx.node_link_graph(graph, edges="links")
        return nx.node_link_graph(graph)

    def get_latest_roots(
        self,
        root_id: int,
        timestamp: datetime | None = None,
        timestamp_future: datetime | None = None,
    ) -> np.ndarray:
        """The root ids the object(s) of ``root_id`` became (or came from) at ``timestamp``.

        ``timestamp_future`` is the deprecated name of ``timestamp``.
        """
        root_ids = root_id_int_list_check(root_id, make_unique=True)
        created = self.get_root_timestamps(root_ids).min()
        if timestamp_future is not None:
            logger.warning("timestamp_future is deprecated, use timestamp instead")
            timestamp = timestamp_future
        timestamp = _as_utc(self._process_timestamp(timestamp))
        if created < timestamp:
            graph = self.get_lineage_graph(
                root_ids, timestamp_past=created, timestamp_future=timestamp, exclude_links_to_future=True
            )
            nodes, _, out_degree = _lineage_degrees(graph)
            return nodes[out_degree == 0]
        # The timestamp is before the root existed: look back for its ancestors.
        graph = self.get_lineage_graph(root_ids, timestamp_past=timestamp, timestamp_future=created)
        nodes, in_degree, _ = _lineage_degrees(graph)
        return nodes[in_degree == 0]

    def get_original_roots(self, root_id: int, timestamp_past: datetime | None = None) -> np.ndarray:
        """The earliest root ids (since ``timestamp_past``) the object(s) came from."""
        root_ids = root_id_int_list_check(root_id, make_unique=True)
        newest = self.get_root_timestamps(root_ids).max()
        graph = self.get_lineage_graph(root_ids, timestamp_past=timestamp_past, timestamp_future=newest)
        nodes, in_degree, _ = _lineage_degrees(graph)
        return nodes[in_degree == 0]

    def is_latest_roots(self, root_ids: IntArrayLike, timestamp: datetime | None = None) -> np.ndarray:
        """Whether each id is a root at ``timestamp`` (default: the ``timestamp`` property,
        else the server's now)."""
        root_ids = root_id_int_list_check(root_ids, make_unique=False)
        if timestamp is None:
            timestamp = self.timestamp
        params = package_timestamp(timestamp) if timestamp is not None else None
        response = self.session.post(self._url("is_latest_roots"), data=dumps({"node_ids": root_ids}), params=params)
        return np.array(handle_response(response)["is_latest"], bool)

    def suggest_latest_roots(
        self,
        root_id: int,
        timestamp: datetime | None = None,
        stop_layer: int | None = None,
        return_all: bool = False,
        return_fraction_overlap: bool = False,
    ) -> int | np.ndarray | tuple[int, float] | tuple[np.ndarray, np.ndarray]:
        """The current root(s) that best continue an outdated root, by shared chunks.

        Edits change the ids of the chunks they touch, so the fraction of the old root's
        chunks at ``stop_layer`` (default: four layers below the top) found in a new root
        measures how much of the object it kept. Returns the best root, or all roots sorted
        by overlap (``return_all``), with the fractions if ``return_fraction_overlap``.
        """
        if stop_layer is None:
            stop_layer = self.segmentation_info.get("graph", {}).get("n_layers", 6) - DELTA_LAYERS
        stop_layer = max(1, stop_layer)
        chunks = self.get_leaves(root_id, stop_layer=stop_layer)
        roots, counts = np.unique(self.get_roots(chunks, timestamp=timestamp), return_counts=True)
        order = np.argsort(counts)[::-1]
        roots = roots[order]
        fractions = counts[order] / len(chunks)
        if return_fraction_overlap:
            return (roots, fractions) if return_all else (int(roots[0]), float(fractions[0]))
        return roots if return_all else int(roots[0])

    def is_valid_nodes(
        self,
        node_ids: IntArrayLike,
        start_timestamp: datetime | None = None,
        end_timestamp: datetime | None = None,
    ) -> np.ndarray:
        """Whether each id existed in the graph between the two times (any layer).

        Ids ≤ 0 are invalid without asking; if no id is left, no request is made.
        ``start_timestamp`` defaults to 2000-01-01 UTC, ``end_timestamp`` to the ``timestamp``
        property (omitted when that is None, so the server uses now).
        """
        node_ids = np.array(node_ids, dtype=np.int64)
        valid_mask = node_ids > 0
        candidates = node_ids[valid_mask]
        if candidates.size == 0:
            return np.full(node_ids.shape, False, dtype=bool)
        candidates = root_id_int_list_check(candidates, make_unique=False)
        if end_timestamp is None:
            end_timestamp = self.timestamp
        if start_timestamp is None:
            start_timestamp = VALID_NODES_START
        params = package_timestamp(start_timestamp, name="start_timestamp")
        params.update(package_timestamp(end_timestamp, name="end_timestamp"))
        response = self.session.get(self._url("valid_nodes"), data=dumps({"node_ids": candidates}), params=params)
        valid_ids = np.array(handle_response(response)["valid_roots"], np.uint64)
        result = np.full(node_ids.shape, False, dtype=bool)
        result[valid_mask] = np.isin(candidates, valid_ids)
        return result

    @check_version_compatibility(
        kwarg_use_constraints={"latest": ROOT_TIMESTAMP_CONSTRAINT, "timestamp": ROOT_TIMESTAMP_CONSTRAINT}
    )
    def get_root_timestamps(
        self, root_ids: IntArrayLike, latest: bool = False, timestamp: datetime | None = None
    ) -> np.ndarray:
        """When each root was created (UTC datetimes), or with ``latest`` the last moment it
        was still a root as of ``timestamp``.

        ``latest`` times are moved 1 ms earlier, so the root is valid at the returned time.
        """
        root_ids = root_id_int_list_check(root_ids, make_unique=False)
        params: dict[str, Any] = {"latest": latest}
        params.update(package_timestamp(self._process_timestamp(timestamp)))
        response = self.session.post(self._url("root_timestamps"), data=dumps({"node_ids": root_ids}), params=params)
        delta = timedelta(milliseconds=1 if latest else 0)
        return np.array(
            [datetime.fromtimestamp(ts, UTC) - delta for ts in handle_response(response)["timestamp"]]
        )

    def get_past_ids(
        self,
        root_ids: IntArrayLike,
        timestamp_past: datetime | None = None,
        timestamp_future: datetime | None = None,
    ) -> dict[str, dict[int, list]]:
        """For each root, the ids at ``timestamp_past`` (``past_id_map``) and
        ``timestamp_future`` (``future_id_map``) that share parts of it; keys are ints."""
        root_ids = root_id_int_list_check(root_ids, make_unique=True)
        params = {
            **package_timestamp(timestamp_past, name="timestamp_past"),
            **package_timestamp(timestamp_future, name="timestamp_future"),
        }
        data = dumps({"root_ids": np.array(root_ids, dtype=np.uint64)})
        result = handle_response(self.session.get(self._url("past_id_mapping"), data=data, params=params))
        for key in ("past_id_map", "future_id_map"):
            if key in result:
                result[key] = {int(k): v for k, v in result[key].items()}
        return result

    def get_delta_roots(
        self, timestamp_past: datetime, timestamp_future: datetime | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Roots that expired and roots that appeared between the two times (default end: now)."""
        if timestamp_future is None:
            timestamp_future = datetime.now(UTC)
        params = {
            **package_timestamp(timestamp_past, name="timestamp_past"),
            **package_timestamp(timestamp_future, name="timestamp_future"),
        }
        result = handle_response(self.session.get(self._url("delta_roots"), params=params))
        return np.array(result["old_roots"]), np.array(result["new_roots"])

    def get_oldest_timestamp(self) -> datetime:
        """The time of the graph's first state."""
        return datetime.fromisoformat(handle_response(self.session.get(self._url("oldest_timestamp")))["iso"])

    # -- proofreading ----------------------------------------------------------------------

    def do_merge(self, supervoxels: IntArrayLike, coords: np.ndarray, resolution: tuple = (4, 4, 40)) -> Any:
        """Merge the objects of the given supervoxels; ``coords`` (N×3, in ``resolution``
        units) are sent in nm. Returns the server's answer."""
        data = []
        for supervoxel, coord in zip(supervoxels, coords):
            position = np.array(coord) * resolution
            data.append([supervoxel, position[0], position[1], position[2]])
        return self._post_edit("do_merge", data)

    def undo_operation(self, operation_id: int) -> dict:
        """Undo an operation; returns the server's answer."""
        return self._post_edit("undo", {"operation_id": operation_id})

    def execute_split(
        self,
        source_points: Any,
        sink_points: Any,
        root_id: int,
        source_supervoxels: Any = None,
        sink_supervoxels: Any = None,
    ) -> tuple[int, list]:
        """Split an object between source and sink points (nm); returns
        ``(operation_id, new_root_ids)``."""
        data = package_split_data(root_id, source_points, sink_points, source_supervoxels, sink_supervoxels)
        result = self._post_edit("execute_split", data)
        return result["operation_id"], result["new_root_ids"]

    def _post_edit(self, endpoint: str, data: Any) -> Any:
        # ``priority=False`` asks the server to queue the edit behind interactive ones.
        response = self.session.post(
            self._url(endpoint), data=dumps(data), params={"priority": False}, headers=JSON_HEADERS
        )
        return handle_response(response)

    def preview_split(
        self,
        source_points: Any,
        sink_points: Any,
        root_id: int,
        source_supervoxels: Any = None,
        sink_supervoxels: Any = None,
        return_additional_ccs: bool = False,
    ) -> tuple[list, list, bool] | tuple[list, list, bool, list]:
        """The supervoxel components a split would produce, without splitting.

        Returns ``(source_cc, sink_cc, success[, other_ccs])``.
        """
        data = package_split_data(root_id, source_points, sink_points, source_supervoxels, sink_supervoxels)
        response = self.session.post(self._url("preview_split"), data=dumps(data), headers=JSON_HEADERS)
        result = handle_response(response)
        components = result["supervoxel_connected_components"]
        success = not result["illegal_split"]
        if return_additional_ccs:
            return components[0], components[1], success, components[2:]
        return components[0], components[1], success

    def remesh_level2_chunks(self, chunk_ids: IntArrayLike) -> None:
        """Ask the meshing service to remesh these level-2 nodes.

        Errors carry the server's message (caveclient raises requests' plain message).
        """
        data = {"new_lvl2_ids": [int(x) for x in chunk_ids]}
        response = self.session.post(self._url("remesh_level2_chunks"), json=data)
        handle_response(response, as_json=False)

    # -- geometry ----------------------------------------------------------------------------

    def get_contact_sites(self, root_id: int, bounds: Any, calc_partners: bool | None = False) -> dict[int, Any]:
        """Contacts of a root with other objects inside a 3×2 box, keyed by partner id."""
        params: dict[str, Any] = {}
        if bounds is not None:
            params["bounds"] = package_bounds(bounds)
        params["partners"] = calc_partners
        url = self._url("contact_sites", root_id=root_id)
        response = self.session.get(url, data=dumps([root_id]), params=params, headers=JSON_HEADERS)
        return {int(k): v for k, v in handle_response(response).items()}

    def find_path(
        self, root_id: int, src_pt: np.ndarray, dst_pt: np.ndarray, precision_mode: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A path through the level-2 graph between two points (nm).

        Returns ``(centroids, l2_path, failed_l2_ids)``; points may be lists as well as arrays.
        """
        nodes = [[root_id, *np.asarray(src_pt).tolist()], [root_id, *np.asarray(dst_pt).tolist()]]
        response = self.session.post(
            self._url("find_path", root_id=root_id),
            data=dumps(nodes),
            params={"precision_mode": precision_mode},
            headers=JSON_HEADERS,
        )
        result = handle_response(response)
        return (
            np.array(result["centroids_list"]),
            np.array(result["l2_path"]),
            np.array(result["failed_l2_ids"], dtype=np.uint64),
        )

    def get_subgraph(self, root_id: int, bounds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Supervoxel edges of a node inside a 3×2 box: ``(edges, affinities, areas)``."""
        params = {"bounds": package_bounds(bounds)} if bounds is not None else {}
        result = handle_response(self.session.get(self._url("get_subgraph", root_id=root_id), params=params))
        return np.int64(result["nodes"]), np.double(result["affinities"]), np.int32(result["areas"])

    @check_version_compatibility(kwarg_use_constraints={"bounds": ">=2.15.0"})
    def level2_chunk_graph(self, root_id: int, bounds: Any = None) -> list:
        """Edges ``[a, b]`` between the level-2 nodes of a root, optionally only those with
        chunks touching a 3×2 box of chunkedgraph voxels.

        Raises ValueError if the server ignored the bounds (it says so in ``Used-Bounds``).
        """
        params = {"bounds": package_bounds(bounds)} if bounds is not None else {}
        response = self.session.get(self._url("lvl2_graph", root_id=root_id), params=params)
        result = handle_response(response)
        if bounds is not None and response.headers.get("Used-Bounds") not in ("true", "True"):
            raise ValueError(
                "Bounds were not used for this query, even though it was requested. "
                "This is likely because your system is running a version of the "
                "chunkedgraph that does not support this feature. Please contact "
                "your system administrator to update the chunkedgraph."
            )
        return result["edge_graph"]

    # -- segmentation metadata -----------------------------------------------------------

    @property
    def cloudvolume_path(self) -> str:
        """The ``graphene://`` path CloudVolume opens this segmentation with."""
        return self._url("cloudvolume_path")

    @property
    def segmentation_info(self) -> dict[str, Any]:
        """The segmentation's info JSON (graph layout, scales, mesh/skeleton dirs); fetched once."""
        if self._segmentation_info is None:
            self._segmentation_info = handle_response(self.session.get(self._url("info")))
        return self._segmentation_info

    @property
    def base_resolution(self) -> list:
        """Voxel size (nm, x/y/z) of the chunkedgraph's coordinates (mip 0)."""
        return self.segmentation_info["scales"][0].get("resolution")

    # -- node-id decoding (opencave extensions) ------------------------------------------

    def _layout(self) -> node_id_codec.NodeIdLayout:
        if self._node_id_layout is None:
            self._node_id_layout = node_id_codec.NodeIdLayout.from_info(self.segmentation_info)
        return self._node_id_layout

    def get_chunk_layer(self, node_ids: IntArrayLike) -> int | np.ndarray:
        """Layer of each node id (1: supervoxel, 2: level 2, top: root), decoded locally.

        An int for one id, an int64 array for many. (opencave extension)
        """
        return node_id_codec.get_layer(node_ids)

    def get_segment_id(self, node_ids: IntArrayLike) -> int | np.ndarray:
        """The segment part of each node id (its number within its chunk), decoded locally.

        An int for one id, a uint64 array for many. (opencave extension)
        """
        return node_id_codec.segment_ids(self._layout(), node_ids)

    def get_chunk_coordinates(self, node_ids: IntArrayLike) -> np.ndarray:
        """Chunk grid coordinates (x, y, z) of each node id at its own layer, decoded locally.

        A length-3 array for one id, an (n, 3) array for many. (opencave extension)
        """
        coordinates = node_id_codec.chunk_coordinates(self._layout(), node_ids)
        return coordinates[0] if np.ndim(node_ids) == 0 else coordinates
