"""The level-2 cache client: precomputed statistics (size, area, centroid, PCA, ...) of the
chunkedgraph's level-2 nodes, the pieces skeletons and fast morphology are built from."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from requests import HTTPError

from ..wire.endpoints import L2CACHE
from ..wire.json_encoding import dumps
from .auth import AuthClient
from .base import ServiceClient, handle_response
from .session import Timeout


# Vector attributes split into scalar columns by ``get_l2data_table``: (shape, column names).
_SPLIT_COLUMNS: dict[str, tuple[tuple[int, ...], list[str]]] = {
    "rep_coord_nm": ((3,), [f"rep_coord_nm_{axis}" for axis in "xyz"]),
    "pca": ((3, 3), [f"pca_{i}_{axis}" for i in range(3) for axis in "xyz"]),
    "pca_val": ((3,), [f"pca_val_{i}" for i in range(3)]),
    "chunk_intersect_count": (
        (2, 3),
        [f"chunk_intersect_count_{axis}_{side}" for side in ("bottom", "top") for axis in "xyz"],
    ),
}


def _split(value: Any, shape: tuple[int, ...], columns: list[str]) -> pd.Series:
    # A node without the attribute (not computed yet) has NaN there. caveclient fills such
    # rows with uninitialised memory; NaN says "missing" honestly.
    if isinstance(value, float):
        value = np.full(shape, np.nan)
    return pd.Series(np.asarray(value).flatten(), index=columns)


class L2CacheClient(ServiceClient):
    """Client of the L2 cache service (``client.l2cache``); API v1, no requests on construction."""

    service = L2CACHE

    def __init__(
        self,
        server_address: str | None = None,
        table_name: str | None = None,
        auth_client: AuthClient | None = None,
        api_version: int | str = "latest",
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        over_client: Any = None,
        verify: bool | str = True,
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
        self._available_attributes: list[str] | None = None
        self._table_mapping: dict[str, Any] | None = None

    def get_l2data(self, l2_ids: Sequence[int] | np.ndarray, attributes: Sequence[str] | None = None) -> dict:
        """``{"<l2 id>": {attribute: value}}`` for level-2 ids (all attributes by default).

        An empty dict for an id means the cache has not computed it yet.
        """
        params: dict[str, Any] = {"int64_as_str": False}
        if attributes is not None:
            params["attribute_names"] = ",".join(attributes)
        response = self.session.post(self._url("l2cache_data"), data=dumps({"l2_ids": l2_ids}), params=params)
        return handle_response(response)

    def get_l2data_table(
        self,
        l2_ids: Sequence[int] | np.ndarray,
        attributes: Sequence[str] | None = None,
        split_columns: bool = True,
    ) -> pd.DataFrame:
        """``get_l2data`` as a DataFrame indexed by ``l2_id``.

        With ``split_columns``, vector attributes become scalar columns (``rep_coord_nm_x``,
        ``pca_0_x`` ... ``pca_2_z``, ``pca_val_0``, ``chunk_intersect_count_x_bottom`` ...);
        ids without data get NaN there.
        """
        df = pd.DataFrame(self.get_l2data(l2_ids, attributes=attributes)).T
        df.index.name = "l2_id"
        df.index = df.index.astype(int)
        if split_columns:
            append = pd.DataFrame(index=df.index)
            for name, (shape, columns) in _SPLIT_COLUMNS.items():
                if name in df.columns:
                    append = append.join(df[name].apply(_split, args=(shape, columns)))
            df = df.join(append).drop(columns=df.columns.intersection(list(_SPLIT_COLUMNS)))
        return df

    def cache_metadata(self) -> dict[str, str]:
        """``{attribute: dtype}`` of the attributes the cache serves."""
        return handle_response(self.session.get(self._url("l2cache_meta")))

    @property
    def attributes(self) -> list[str]:
        """Names of the attributes the cache serves (fetched once)."""
        if self._available_attributes is None:
            self._available_attributes = list(self.cache_metadata())
        return self._available_attributes

    def table_mapping(self) -> dict[str, dict[str, Any]]:
        """``{chunkedgraph table: {"l2cache_id", "cv_path"}}`` of the deployment (fetched once)."""
        if self._table_mapping is None:
            self._table_mapping = handle_response(self.session.get(self._url("l2cache_table_mapping")))
        return self._table_mapping

    def has_cache(self, datastack_name: str | None = None) -> bool:
        """Whether the datastack's segmentation has an L2 cache.

        Only ``graphene://`` (chunkedgraph) segmentations can. A deployment without a table
        mapping (404) has none; other errors are raised. Unlike caveclient, the table looked
        up is that of ``datastack_name`` (caveclient uses the client's own datastack's), and
        no chunkedgraph client is built for it.
        """
        table_name = self._default_url_mapping["table_id"]
        if self.fc is not None:
            segmentation_source = self.fc.info.segmentation_source(datastack_name=datastack_name)
            if not segmentation_source or urlparse(segmentation_source).scheme != "graphene":
                return False
            table_name = segmentation_source.rstrip("/").split("/")[-1]
        try:
            mapping = self.table_mapping()
        except HTTPError as err:
            if err.response is not None and err.response.status_code == 404:
                warnings.warn(
                    f"L2cache deployment '{self.server_address}/l2cache' does not have a l2 cache "
                    "table mapping. Assuming no cache.",
                    stacklevel=2,
                )
                return False
            raise
        return table_name in mapping
