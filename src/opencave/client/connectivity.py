"""The connectivity client (``client.connectivity``): connections, adjacency matrices, partners,
common partners, cell-type aggregates, paths and diffs from an opencave server, at a version or
a timestamp.

Every method takes ``version=`` or ``timestamp=`` (default: the client's version if one is set,
else the datastack's newest version), ``synapse_table=`` (default: the datastack's synapse
table) and ``min_synapses=`` (default 1). Answers are DataFrames whose ``attrs`` name what
they describe: datastack, synapse table, version, timestamp, threshold. With the client's
cache on (``CAVEclient(..., cache=True)``), answers pinned to a version or a past moment are
kept locally. Against other CAVE deployments, compute the same from a synapse DataFrame with
``opencave.connectivity``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse

from ..wire import connectivity as wire
from ..wire.endpoints import CONNECTIVITY
from .auth import AuthClient
from .base import ServiceClient, handle_response
from .cache import Fetched
from .session import Timeout

Direction = Literal["input", "output"]


def _ids(roots: Any) -> list[int]:
    """Root ids from an int, a list, an array or a Series, as Python ints."""
    if isinstance(roots, (int, np.integer)):
        return [int(roots)]
    if isinstance(roots, (pd.Series, pd.Index, np.ndarray)):
        return [int(r) for r in np.asarray(roots).ravel()]
    if isinstance(roots, Iterable) and not isinstance(roots, (str, bytes)):
        return [int(r) for r in roots]
    raise TypeError(f"root ids must be an int or a list/array of ints, not {type(roots).__name__}")


def _moment(value: datetime | float | None) -> str | float | None:
    if value is None or isinstance(value, (int, float)):
        return value
    return value.isoformat()


class ConnectivityClient(ServiceClient):
    """Client of opencave's connectivity service on a datastack's local server."""

    service = CONNECTIVITY
    fallback_version = 1

    def __init__(
        self,
        server_address: str,
        datastack_name: str,
        synapse_table: str | None = None,
        auth_client: AuthClient | None = None,
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
            1,
            verify=verify,
            max_retries=max_retries,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
            over_client=over_client,
            timeout=timeout,
        )
        self._default_url_mapping["datastack_name"] = datastack_name
        self._datastack_name = datastack_name
        self.synapse_table = synapse_table

    # -- requests --------------------------------------------------------------------------------
    def _moment(self, version: int | None, timestamp: datetime | float | None) -> dict[str, Any]:
        if version is None and timestamp is None and self.fc is not None:
            version = getattr(self.fc, "version", None)
        return {"version": version, "timestamp": _moment(timestamp)}

    def _ask(self, method: str, body: dict[str, Any], moment: dict[str, Any]) -> pd.DataFrame:
        """POST ``body`` (plus the moment) to ``method``; the answer as a DataFrame with its
        metadata in ``attrs``, through the client's query cache when it has one."""
        payload = {k: v for k, v in {**body, **(moment if method != "diff" else {})}.items() if v is not None}

        def fetch() -> Any:
            response = self.session.post(self._url(method), json=payload, headers={"Accept": wire.ARROW_STREAM})
            content = handle_response(response, as_json=False).content
            table, meta = wire.decode_arrow(content)
            frame = table.to_pandas()
            frame.attrs.update(meta)
            if meta.get("row_limit") is not None:
                warnings.warn(
                    f"The server cut this answer at its row limit of {meta['row_limit']:,} rows; ask about fewer roots "
                    "or raise min_synapses for the rest.",
                    stacklevel=4,
                )
            return frame, meta

        cache = getattr(self.fc, "query_cache", None)
        if cache is None:
            return fetch()[0]
        def fetched() -> Fetched:
            # keyed as a call naming its moment is: by version, else by timestamp (a diff by its
            # second moment; the first is in its parameters)
            frame, meta = fetch()
            pinned = meta.get("to", meta)
            when = pinned.get("timestamp") if pinned.get("version") is None else None
            return Fetched(
                frame=frame,
                version=pinned.get("version"),
                timestamp=datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None,
                truncated=bool(meta.get("truncated")),
            )

        asked_at = moment.get("timestamp")
        return cache.answer(
            service="connectivity",
            method=method,
            datastack=self._datastack_name,
            table=body.get("synapse_table"),
            version=moment.get("version"),
            timestamp=datetime.fromisoformat(asked_at) if isinstance(asked_at, str) else asked_at,
            params={k: v for k, v in body.items() if v is not None},
            fetch=fetched,
        )

    def _common(self, synapse_table: str | None, min_synapses: int) -> dict[str, Any]:
        return {"synapse_table": synapse_table or self.synapse_table, "min_synapses": int(min_synapses)}

    # -- operations ------------------------------------------------------------------------------
    def edges(
        self,
        pre_roots: Any = None,
        post_roots: Any = None,
        *,
        version: int | None = None,
        timestamp: datetime | float | None = None,
        synapse_table: str | None = None,
        min_synapses: int = 1,
    ) -> pd.DataFrame:
        """Connections with at least ``min_synapses`` synapses from ``pre_roots`` (default: any)
        to ``post_roots`` (default: any): ``pre_pt_root_id, post_pt_root_id, n_synapses,
        size_sum``, strongest first."""
        body = {
            **self._common(synapse_table, min_synapses),
            "pre_roots": None if pre_roots is None else _ids(pre_roots),
            "post_roots": None if post_roots is None else _ids(post_roots),
        }
        return self._ask("edges", body, self._moment(version, timestamp))

    def adjacency(
        self,
        roots: Any,
        sparse: bool = False,
        *,
        version: int | None = None,
        timestamp: datetime | float | None = None,
        synapse_table: str | None = None,
        min_synapses: int = 1,
    ) -> pd.DataFrame | scipy.sparse.csr_array:
        """The roots × roots matrix of synapse counts (rows presynaptic, columns postsynaptic, in
        the order given): a DataFrame, or with ``sparse=True`` a ``scipy.sparse.csr_array``."""
        ids = _ids(roots)
        if len(set(ids)) != len(ids):
            raise ValueError("roots must be distinct: each names one row and one column of the matrix")
        cells = self._ask("adjacency", {**self._common(synapse_table, min_synapses), "roots": ids}, self._moment(version, timestamp))
        index = pd.Index(ids, dtype="int64")
        rows = index.get_indexer(cells["pre_pt_root_id"])
        cols = index.get_indexer(cells["post_pt_root_id"])
        counts = cells["n_synapses"].to_numpy(dtype=np.int64)
        if sparse:
            return scipy.sparse.csr_array((counts, (rows, cols)), shape=(len(ids), len(ids)), dtype=np.int64)
        matrix = np.zeros((len(ids), len(ids)), dtype=np.int64)
        matrix[rows, cols] = counts
        frame = pd.DataFrame(matrix, index=pd.Index(ids, name="pre_pt_root_id"), columns=pd.Index(ids, name="post_pt_root_id"))
        frame.attrs.update(cells.attrs)
        return frame

    def partners(
        self,
        roots: Any,
        direction: Direction = "input",
        *,
        version: int | None = None,
        timestamp: datetime | float | None = None,
        synapse_table: str | None = None,
        min_synapses: int = 1,
    ) -> pd.DataFrame:
        """Each root's ``direction`` partners: ``root_id, partner_root_id, n_synapses,
        size_sum``, roots in the order given, strongest partners first."""
        body = {**self._common(synapse_table, min_synapses), "roots": _ids(roots), "direction": direction}
        return self._ask("partners", body, self._moment(version, timestamp))

    def common_partners(
        self,
        roots: Any,
        direction: Direction = "input",
        *,
        version: int | None = None,
        timestamp: datetime | float | None = None,
        synapse_table: str | None = None,
        min_synapses: int = 1,
    ) -> pd.DataFrame:
        """The partners every root has (each with ``min_synapses`` or more): one row per
        (partner, root), partners with the most synapses over all roots first."""
        body = {**self._common(synapse_table, min_synapses), "roots": _ids(roots), "direction": direction}
        return self._ask("common_partners", body, self._moment(version, timestamp))

    def cell_type_matrix(
        self,
        cell_type_table: str,
        column: str = "cell_type",
        long: bool = False,
        *,
        version: int | None = None,
        timestamp: datetime | float | None = None,
        synapse_table: str | None = None,
        min_synapses: int = 1,
    ) -> pd.DataFrame:
        """Synapse counts from each cell type to each (rows presynaptic), types read from
        ``cell_type_table`` (a reference table is followed to its roots); roots with two
        different types are left out. ``attrs["neurons"]`` counts the neurons of each type.
        With ``long=True``: one row per type pair with ``n_synapses, size_sum, n_connections,
        n_pre_neurons, n_post_neurons``."""
        body = {**self._common(synapse_table, min_synapses), "cell_type_table": cell_type_table, "column": column}
        found = self._ask("cell_type_matrix", body, self._moment(version, timestamp))
        if long:
            return found
        types = list(found.attrs.get("neuron_types", []))
        matrix = (
            found.pivot(index="pre_type", columns="post_type", values="n_synapses")
            .reindex(index=types, columns=types)
            .fillna(0)
            .astype(np.int64)
        )
        matrix.index.name, matrix.columns.name = "pre_type", "post_type"
        matrix.attrs.update(found.attrs)
        return matrix

    def paths(
        self,
        sources: Any,
        targets: Any,
        max_hops: int = 3,
        max_paths: int = 1000,
        *,
        version: int | None = None,
        timestamp: datetime | float | None = None,
        synapse_table: str | None = None,
        min_synapses: int = 1,
    ) -> pd.DataFrame:
        """Directed paths of 1 to ``max_hops`` connections (each of ``min_synapses`` or more)
        from a source to a target: ``path, n_hops, weights, bottleneck``, shortest and strongest
        first; ``attrs["truncated"]`` when more than ``max_paths`` exist."""
        body = {
            **self._common(synapse_table, min_synapses),
            "sources": _ids(sources),
            "targets": _ids(targets),
            "max_hops": int(max_hops),
            "max_paths": int(max_paths),
        }
        return self._ask("paths", body, self._moment(version, timestamp))

    def diff(
        self,
        roots: Any,
        from_version: int | None = None,
        to_version: int | None = None,
        *,
        from_timestamp: datetime | float | None = None,
        to_timestamp: datetime | float | None = None,
        synapse_table: str | None = None,
        min_synapses: int = 1,
    ) -> pd.DataFrame:
        """Partners gained and lost by ``roots`` (roots at the first moment) between two moments,
        each a version or a timestamp: per root, successor, direction and partner (at the second
        moment), ``n_before, n_after, change, status``. Synapse ids are the stable keys; old roots
        map to their successors through lineage."""
        body = {
            **self._common(synapse_table, min_synapses),
            "roots": _ids(roots),
            "from_version": from_version,
            "to_version": to_version,
            "from_timestamp": _moment(from_timestamp),
            "to_timestamp": _moment(to_timestamp),
        }
        return self._ask("diff", body, {"version": to_version, "timestamp": _moment(to_timestamp)})
