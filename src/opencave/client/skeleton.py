"""The skeleton client (``client.skeleton``): skeletons of root ids from a CAVE skeleton service,
as dicts of numpy arrays or SWC DataFrames, one at a time, in small synchronous bulks, from the
cache in large bulks, or generated in the background.

It mirrors caveclient 8.2.1's ``SkeletonClient`` (same methods, defaults, results and error
messages); every encoding is decoded by ``opencave.wire.skeletons``, the codec the server uses.
It is cheaper than caveclient's: what cannot change for a client (the server's skeleton
versions, whether the datastack has an L2 cache, the graph's layer count) is fetched once, and
root ids are validated with one chunkedgraph request per call instead of one per id plus a
CloudVolume per call. Invalid ids still fail with caveclient's errors.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import numpy as np
import pandas as pd
import requests
from packaging.version import Version

from ..wire import skeletons as codec
from ..wire.endpoints import SKELETON
from ..wire.node_ids import get_layer
from .auth import AuthClient
from .base import ServiceClient, check_version_compatibility, handle_response
from .errors import ServerIncompatibilityError
from .session import Timeout

logger = logging.getLogger(__name__)

SERVER_KEY = SKELETON.server_key

MAX_SKELETONS_EXISTS_QUERY_SIZE = 1000
MAX_BULK_SYNCHRONOUS_SKELETONS = 10
MAX_BULK_CACHED_SKELETONS = 500
MAX_BULK_ASYNCHRONOUS_SKELETONS = 10000
BULK_SKELETONS_BATCH_SIZE = 1000

_OUTPUT_FORMATS = ["dict", "swc"]
_GCS_DOWNLOAD = "https://storage.googleapis.com/download/storage/v1/b/{bucket}/o/{path}?alt=media"


class NoL2CacheException(Exception):
    """The datastack has no L2 cache, which skeletons are built from."""

    def __init__(self, value: str = ""):
        super().__init__(f"No L2Cache found. {value}".strip())


class SkeletonBucketUnavailable(requests.HTTPError):
    """``fetch_skeletons(method="gcs")`` on a service that keeps no cloud bucket of skeletons.

    An ``HTTPError`` (the service answered 501), so handlers written for caveclient still catch
    it; the message says to use ``method="server"``.
    """


def _plain(value: Any) -> Any:
    """A numpy integer as a Python int (requests cannot serialise numpy scalars to JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def _id_list(root_ids: Any) -> list[Any]:
    return [_plain(v) for v in (root_ids.tolist() if isinstance(root_ids, np.ndarray) else root_ids)]


class SkeletonClient(ServiceClient):
    """Client of the skeleton service on a datastack's local server (API v1)."""

    service = SKELETON
    fallback_version = 1  # the service has no API-version endpoint

    def __init__(
        self,
        server_address: str,
        datastack_name: str | None = None,
        auth_client: AuthClient | None = None,
        api_version: int | str = "latest",
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
        self._datastack_name = datastack_name
        self._skeleton_versions: list[int] | None = None
        self._has_l2cache: bool | None = None
        self._n_layers: int | None = None
        self._info_cache: dict[tuple[Any, str], dict] = {}
        self._gcs_token_cache: dict[tuple[str, int], dict] = {}

    # -- service versions -------------------------------------------------------------------

    def get_version(self) -> Version | None:
        """The skeleton service's software version, or None if it does not say (404)."""
        response = self.session.get(self._url("get_version"))
        if response.status_code == 404:
            return None
        return Version(response.json())

    def get_versions(self) -> list[int] | None:
        """The skeleton versions the service offers (e.g. ``[-1, 0, 1, 2, 3, 4]``), or None (404)."""
        response = self.session.get(self._url("get_versions"))
        if response.status_code == 404:
            return None
        return response.json()

    def _check_skeleton_version(self, skeleton_version: Any) -> None:
        """caveclient's check against ``get_versions()``, with the list fetched once."""
        if self._skeleton_versions is None:
            versions = self.get_versions()
            if versions is None:
                raise ServerIncompatibilityError(
                    f"The skeleton service at {self.server_address} does not list its skeleton "
                    "versions (GET /skeletoncache/api/versions answered 404)."
                )
            self._skeleton_versions = versions
        if skeleton_version not in self._skeleton_versions:
            raise ValueError(
                f"Unknown skeleton version: {skeleton_version}. Valid options: {self._skeleton_versions}"
            )

    def _older_than(self, version: str) -> bool:
        """Whether the server predates ``version``; caveclient picks request formats by it.

        caveclient fails with a TypeError when the server does not report a version; this says
        what is missing instead.
        """
        if self.server_version is None:
            raise ServerIncompatibilityError(
                f"The skeleton service at {self.server_address} does not report its version "
                "(GET /skeletoncache/api/version), which decides the request formats."
            )
        return self.server_version < Version(version)

    # -- gzip conventions (caveclient's static helpers) ---------------------------------------

    @staticmethod
    def compressStringToBytes(inputString: str) -> bytes:
        """gzip of the UTF-8 text."""
        return codec.compress_text(inputString)

    @staticmethod
    def compressDictToBytes(inputDict: Any, remove_spaces: bool = True) -> bytes:
        """gzip of ``json.dumps(inputDict)``; ``remove_spaces`` removes every space, those inside
        strings included, as caveclient does."""
        text = json.dumps(inputDict)
        return codec.compress_text(text.replace(" ", "") if remove_spaces else text)

    @staticmethod
    def decompressBytesToString(inputBytes: bytes) -> str:
        """The UTF-8 text of gzip bytes."""
        return codec.decompress_text(inputBytes)

    @staticmethod
    def decompressBytesToDict(inputBytes: bytes) -> Any:
        """The JSON document of gzip bytes."""
        return codec.decompress_dict(inputBytes)

    # -- shared checks --------------------------------------------------------------------------

    def _datastack(self, datastack_name: str | None) -> str:
        datastack_name = datastack_name if datastack_name is not None else self._datastack_name
        assert datastack_name is not None
        return datastack_name

    def _require_l2cache(self) -> None:
        """Skeletons are built from the L2 cache; without a parent client nothing is checked."""
        if self.fc is None:
            return
        if self._has_l2cache is None:
            self._has_l2cache = bool(self.fc.l2cache.has_cache())
        if not self._has_l2cache:
            raise NoL2CacheException("SkeletonClient requires an L2Cache.")

    def _top_layer(self) -> int | None:
        if self.fc is None:
            return None
        if self._n_layers is None:
            self._n_layers = int(self.fc.chunkedgraph.segmentation_info["graph"]["n_layers"])
        return self._n_layers

    def _is_root_layer(self, root_id: Any) -> bool:
        top = self._top_layer()
        return top is None or int(get_layer(root_id)) == top

    def _valid_mask(self, root_ids: list[Any]) -> list[bool]:
        """Whether each id is a node of the graph (one chunkedgraph request for all)."""
        if self.fc is None or not root_ids:
            return [True] * len(root_ids)
        return [bool(v) for v in np.atleast_1d(self.fc.chunkedgraph.is_valid_nodes(root_ids))]

    def _check_root(self, root_id: Any) -> None:
        if not self._is_root_layer(root_id):
            raise ValueError(
                f"Invalid root id: {root_id} (perhaps this is an id corresponding to a different level "
                "of the PCG, e.g., a supervoxel id)"
            )
        if not self._valid_mask([root_id])[0]:
            raise ValueError(f"Invalid root id: {root_id} (perhaps it doesn't exist; the error is unclear)")

    def _valid_roots(self, root_ids: Sequence[Any], check_existence: bool) -> list[Any]:
        """The ids that pass the layer (and existence) checks, each failure logged as caveclient does."""
        valid = []
        for rid in root_ids:
            if self._is_root_layer(rid):
                valid.append(rid)
            else:
                logger.warning(
                    f"Invalid root id: {rid} (perhaps this is an id corresponding to a different level "
                    "of the PCG, e.g., a supervoxel id). It won't be processed."
                )
        if not check_existence:
            return valid
        mask = self._valid_mask(valid)
        for rid, ok in zip(valid, mask):
            if not ok:
                logger.warning(
                    f"Invalid root id: {rid} (perhaps it doesn't exist; the error is unclear). It won't be processed."
                )
        return [rid for rid, ok in zip(valid, mask) if ok]

    def _endpoint_format(self, output_format: str) -> str:
        if output_format not in _OUTPUT_FORMATS:
            raise ValueError(f"Unknown output format: {output_format}. Valid options: {_OUTPUT_FORMATS}")
        if output_format == "swc":
            return "swccompressed"
        return "jsoncompressed" if self._older_than("0.6.0") else "flatdict"

    def _skeleton_url(self, endpoint: str, datastack_name: str, verbose_level: Any, **mapping: Any) -> str:
        url = self._url(endpoint, datastack_name=datastack_name, **mapping)
        return f"{url}?verbose_level={verbose_level}"

    # -- cache and service state ------------------------------------------------------------------

    @check_version_compatibility(method_constraint=">=0.21.0")
    def get_refusal_list(
        self,
        datastack_name: str | None = None,
        log_warning: bool = True,
        verbose_level: int | None = 0,
    ) -> pd.DataFrame:
        """Root ids the service refuses to skeletonize: columns ``DATASTACK_NAME``, ``ROOT_ID``."""
        url = self._skeleton_url("get_refusal_list", self._datastack(datastack_name), verbose_level)
        response = self.session.get(url)
        self.raise_for_status(response, log_warning=log_warning)
        return codec.decode_refusal_list(response.content)

    @check_version_compatibility(method_constraint=">=0.5.9")
    def get_cache_contents(
        self,
        datastack_name: str | None = None,
        skeleton_version: int | None = 4,
        root_id_prefixes: int | str | list = 0,
        limit: int | None = 0,
        log_warning: bool = True,
        verbose_level: int | None = 0,
    ) -> dict:
        """Cached skeleton files whose root ids start with the prefixes: ``{"num_found", "files"}``.

        Prefixes: an int or str, or a list of them; ``limit`` 0 means no limit.
        """
        datastack_name = self._datastack(datastack_name)
        self._check_skeleton_version(skeleton_version)
        if isinstance(root_id_prefixes, int):
            root_id_prefixes = str(root_id_prefixes)
        elif isinstance(root_id_prefixes, list):
            root_id_prefixes = ",".join(str(v) for v in root_id_prefixes)
        url = self._skeleton_url(
            "get_cache_contents_via_skvn_ridprefixes_limit",
            datastack_name,
            verbose_level,
            root_id_prefixes=root_id_prefixes,
            limit=limit,
            skeleton_version=skeleton_version,
        )
        response = self.session.get(url)
        self.raise_for_status(response, log_warning=log_warning)
        return response.json()

    def _root_id_batches(
        self,
        endpoint: str,
        root_ids: list,
        datastack_name: str | None,
        skeleton_version: int,
        verbose_level: int,
        use_post: bool,
        log_warning: bool,
    ) -> Iterator[tuple[list, requests.Response]]:
        """Each batch of root ids with its checked response: POSTed as JSON to
        ``<endpoint>_as_post`` (newer servers), or comma-joined into ``<endpoint>``'s URL."""
        for start in range(0, len(root_ids), BULK_SKELETONS_BATCH_SIZE):
            batch = root_ids[start : start + BULK_SKELETONS_BATCH_SIZE]
            if use_post:
                url = self._skeleton_url(endpoint + "_as_post", datastack_name, verbose_level)
                body = {"root_ids": batch, "skeleton_version": skeleton_version, "verbose_level": verbose_level}
                yield batch, handle_response(self.session.post(url, json=body), as_json=False)
            else:
                url = self._skeleton_url(
                    endpoint,
                    datastack_name,
                    verbose_level,
                    root_ids=",".join(str(v) for v in batch),
                    skeleton_version=skeleton_version,
                )
                response = self.session.get(url)
                self.raise_for_status(response, log_warning=log_warning)
                yield batch, response

    @check_version_compatibility(method_constraint=">=0.5.10")
    def skeletons_exist(
        self,
        datastack_name: str | None = None,
        skeleton_version: int | None = 4,
        root_ids: int | str | list = 0,
        log_warning: bool = True,
        verbose_level: int | None = 0,
    ) -> bool | dict[int, bool]:
        """Whether skeletons of the root ids are cached: a bool for one id, else ``{root_id: bool}``.

        At most 1000 ids are checked (the rest are dropped with a warning).
        """
        use_post = not self._older_than("0.9.0")
        if not use_post:
            logger.warning(
                "Server version is old and only supports GET interactions for bulk async skeletons. "
                "Consider upgrading to a newer server version to enable POST interactions."
            )
        datastack_name = self._datastack(datastack_name)
        self._check_skeleton_version(skeleton_version)
        if isinstance(root_ids, (int, np.integer)):
            root_ids = str(root_ids)
        root_ids = _id_list(root_ids) if isinstance(root_ids, (list, np.ndarray)) else [root_ids]
        if len(root_ids) > MAX_SKELETONS_EXISTS_QUERY_SIZE:
            logger.warning(
                f"The number of root_ids exceeds the current limit of {MAX_SKELETONS_EXISTS_QUERY_SIZE}. "
                f"Only the first {MAX_SKELETONS_EXISTS_QUERY_SIZE} will be processed."
            )
            root_ids = root_ids[:MAX_SKELETONS_EXISTS_QUERY_SIZE]

        results: dict[int, bool] = {}
        batches = self._root_id_batches(
            "skeletons_exist_via_skvn_rids", root_ids, datastack_name, skeleton_version, verbose_level, use_post, log_warning
        )
        for batch, response in batches:
            answer = response.json()
            if isinstance(answer, dict):
                results.update({int(key): value for key, value in answer.items()})
            elif isinstance(answer, bool):
                assert len(batch) == 1
                results[int(batch[0])] = answer
            else:
                raise ValueError(f"Unexpected response type: {type(answer)}")
        if len(results) == 1:
            return next(iter(results.values()))
        return results

    def get_precomputed_skeleton_info(self, skvn: int, datastack_name: str | None = None) -> dict:
        """The Neuroglancer ``neuroglancer_skeletons`` info of skeleton version ``skvn`` (kept
        per client: it does not change)."""
        self._require_l2cache()
        datastack_name = self._datastack(datastack_name)
        key = (skvn, datastack_name)
        if key not in self._info_cache:
            response = self.session.get(
                self._url("skeleton_info_versioned", datastack_name=datastack_name, skeleton_version=skvn)
            )
            self.raise_for_status(response)
            self._info_cache[key] = response.json()
        return self._info_cache[key]

    # -- skeletons ------------------------------------------------------------------------------

    def get_skeleton(
        self,
        root_id: int,
        datastack_name: str | None = None,
        skeleton_version: int | None = 4,
        output_format: Literal["dict", "swc"] = "dict",
        log_warning: bool = True,
        verbose_level: int | None = 0,
    ) -> dict | pd.DataFrame:
        """One skeleton, generated first if it is not cached yet.

        ``output_format`` "dict": a flat dict whose ``vertices``, ``edges``, ``radius``,
        ``compartment``, ``lvl2_ids`` and ``mesh_to_skel_map`` are numpy arrays; "swc": a
        DataFrame with columns id, type, x, y, z, radius, parent. ``skeleton_version`` −1 is the
        latest, 0 the Neuroglancer-compatible one.
        """
        self._require_l2cache()
        endpoint_format = self._endpoint_format(output_format)
        self._check_skeleton_version(skeleton_version)
        if self._older_than("0.6.1") and skeleton_version == -1:
            skeleton_version = sorted(self._skeleton_versions or [])[-1]
        use_async = not self._older_than("0.13.7")
        self._check_root(root_id)
        endpoint = "get_skeleton_async_via_skvn_rid_fmt" if use_async else "get_skeleton_via_skvn_rid_fmt"
        url = self._skeleton_url(
            endpoint,
            self._datastack(datastack_name),
            verbose_level,
            root_id=root_id,
            skeleton_version=skeleton_version,
            output_format=endpoint_format,
        )
        response = self.session.get(url)
        self.raise_for_status(response, log_warning=log_warning)
        if endpoint_format == "swccompressed":
            return codec.swc_frame(codec.decompress_text(response.content))
        if endpoint_format == "flatdict":
            return codec.decode_flatdict(response.content)
        return _flatten_vertex_properties(codec.decompress_dict(response.content))

    @check_version_compatibility(method_constraint=">=0.5.9")
    def get_bulk_skeletons(
        self,
        root_ids: list,
        datastack_name: str | None = None,
        skeleton_version: int | None = 4,
        output_format: Literal["dict", "swc"] = "dict",
        generate_missing_skeletons: bool = False,
        log_warning: bool = True,
        verbose_level: int | None = 0,
    ) -> dict[str, dict | pd.DataFrame]:
        """Skeletons of up to 10 root ids, ``{"<root id>": skeleton}``.

        Invalid ids are skipped with a warning. Dicts keep lists (not numpy arrays), as in
        caveclient. Ids not cached are generated only with ``generate_missing_skeletons``,
        else they are missing from the answer.
        """
        self._require_l2cache()
        endpoint_format = self._endpoint_format(output_format)
        self._check_skeleton_version(skeleton_version)
        root_ids = self._valid_roots(_id_list(root_ids), check_existence=True)
        if not root_ids:
            logger.error("No valid root ids were submitted.")
            return {}
        if len(root_ids) > MAX_BULK_SYNCHRONOUS_SKELETONS:
            root_ids = root_ids[:MAX_BULK_SYNCHRONOUS_SKELETONS]
            if verbose_level >= 1:
                logger.warning(f"Truncating bulk skeleton list to {MAX_BULK_SYNCHRONOUS_SKELETONS}")
        url = self._skeleton_url(
            "get_bulk_skeletons_via_skvn_rids",
            self._datastack(datastack_name),
            verbose_level,
            root_ids=",".join(str(v) for v in root_ids),
            output_format=endpoint_format,
            gen_missing_sks=generate_missing_skeletons,
            skeleton_version=skeleton_version,
        )
        response = self.session.get(url)
        self.raise_for_status(response, log_warning=log_warning)
        return _decode_bulk(response.json(), endpoint_format)

    @check_version_compatibility(method_constraint=">=0.5.9")
    def generate_bulk_skeletons_async(
        self,
        root_ids: list,
        datastack_name: str | None = None,
        skeleton_version: int | None = None,
        log_warning: bool = True,
        verbose_level: int | None = 0,
    ) -> float:
        """Queue skeleton generation for up to 10000 root ids; returns the service's upper
        estimate of the time it takes, in seconds.

        Ids of another layer are skipped with a warning (existence is checked by the service).
        """
        self._require_l2cache()
        use_post = not self._older_than("0.8.0")
        if not use_post:
            logger.warning(
                "Server version is old and only supports GET interactions for bulk async skeletons. "
                "Consider upgrading to a newer server version to enable POST interactions."
            )
        if skeleton_version is None:
            logger.warning(
                "The optional nature of the 'skeleton_version' parameter will be deprecated in the future. "
                "Please specify a skeleton version."
            )
            skeleton_version = 4
        self._check_skeleton_version(skeleton_version)
        if isinstance(root_ids, np.ndarray):
            root_ids = root_ids.tolist()
        if not isinstance(root_ids, list):
            raise ValueError(f"root_ids must be a list or numpy array of root_ids, not a {type(root_ids)}")
        datastack_name = self._datastack(datastack_name)
        root_ids = self._valid_roots(_id_list(root_ids), check_existence=False)
        if not root_ids:
            logger.error("No valid root ids were submitted.")
            return {}  # type: ignore[return-value]  # caveclient returns an empty dict here
        if len(root_ids) > MAX_BULK_ASYNCHRONOUS_SKELETONS:
            logger.warning(
                f"The number of root_ids exceeds the current limit of {MAX_BULK_ASYNCHRONOUS_SKELETONS}. "
                f"Only the first {MAX_BULK_ASYNCHRONOUS_SKELETONS} will be processed."
            )
            root_ids = root_ids[:MAX_BULK_ASYNCHRONOUS_SKELETONS]

        total = 0.0
        batches = self._root_id_batches(
            "gen_bulk_skeletons_via_skvn_rids", root_ids, datastack_name, skeleton_version, verbose_level, use_post, log_warning
        )
        for _, response in batches:
            total += float(response.text)
        logger.info(f"Upper estimate to generate all {len(root_ids)} skeletons: {total:.0f} seconds")
        return total

    @check_version_compatibility(method_constraint=">=0.23.9")
    def fetch_skeletons(
        self,
        root_ids: list,
        datastack_name: str | None = None,
        skeleton_version: int | None = 4,
        output_format: Literal["dict", "swc"] = "dict",
        method: Literal["server", "gcs"] = "server",
        generate_missing_skeletons: bool = False,
        verbose_level: int | None = 0,
    ) -> dict:
        """Cached skeletons of up to 500 root ids, ``{"<root id>": skeleton}``, without
        validating ids; ids not cached are absent (``generate_missing_skeletons`` queues them).

        ``method="server"`` asks the service; ``"gcs"`` downloads the cached H5 files from the
        service's cloud bucket with a short-lived token (dict output only). A service without a
        bucket (opencave's) answers the token request 501: ``SkeletonBucketUnavailable``.
        """
        datastack_name = self._datastack(datastack_name)
        self._check_skeleton_version(skeleton_version)
        if method == "server":
            return self._fetch_via_server(
                root_ids, datastack_name, skeleton_version, output_format, generate_missing_skeletons, verbose_level
            )
        if method == "gcs":
            return self._fetch_via_gcs(
                root_ids, datastack_name, skeleton_version, output_format, generate_missing_skeletons, verbose_level
            )
        raise ValueError(f"method must be 'server' or 'gcs', got '{method}'")

    def _fetch_via_server(
        self,
        root_ids: list,
        datastack_name: str,
        skeleton_version: int,
        output_format: str,
        generate_missing: bool,
        verbose_level: Any,
    ) -> dict:
        if len(root_ids) > MAX_BULK_CACHED_SKELETONS:
            logger.warning(
                f"The number of root_ids exceeds MAX_BULK_CACHED_SKELETONS ({MAX_BULK_CACHED_SKELETONS}). "
                f"Only the first {MAX_BULK_CACHED_SKELETONS} will be requested."
            )
            root_ids = root_ids[:MAX_BULK_CACHED_SKELETONS]
        formats = {"dict": "flatdict", "swc": "swccompressed"}
        if output_format not in formats:
            raise ValueError(f"output_format must be 'dict' or 'swc', got '{output_format}'")
        url = self._url(
            "get_cached_skeletons_bulk_as_post",
            datastack_name=datastack_name,
            skeleton_version=skeleton_version,
            output_format=formats[output_format],
        )
        body = {"root_ids": _id_list(root_ids), "generate_missing": generate_missing, "verbose_level": verbose_level}
        return _decode_bulk(handle_response(self.session.post(url, json=body)), formats[output_format])

    def _fetch_via_gcs(
        self,
        root_ids: list,
        datastack_name: str,
        skeleton_version: int,
        output_format: str,
        generate_missing: bool,
        verbose_level: Any,
    ) -> dict:
        if output_format != "dict":
            raise ValueError("method='gcs' only supports output_format='dict'. Use method='server' for SWC output.")
        token = self._gcs_token(datastack_name, skeleton_version, verbose_level)
        # The token is for the bucket only: a plain request, without this session's credentials.
        headers = {"Authorization": f"Bearer {token['token']}"}
        skeletons: dict[str, dict] = {}
        missing = []
        for rid in _id_list(root_ids):
            path = urllib.parse.quote(token["path_template"].format(rid=rid), safe="")
            url = _GCS_DOWNLOAD.format(bucket=token["bucket"], path=path)
            try:
                response = requests.get(url, headers=headers, timeout=self.timeout, verify=self.verify)
                if response.status_code == 404:
                    missing.append(rid)
                    continue
                response.raise_for_status()
                skeletons[str(rid)] = codec.decode_h5(response.content)
            except Exception as error:  # noqa: BLE001 - one bad file must not lose the others
                logger.error(f"Error downloading skeleton for root_id {rid}: {error}")
        if generate_missing and missing:
            try:
                self.generate_bulk_skeletons_async(
                    missing, datastack_name=datastack_name, skeleton_version=skeleton_version
                )
            except Exception as error:  # noqa: BLE001 - queueing is a courtesy
                logger.warning(f"Failed to queue missing skeletons for async generation: {error}")
        return skeletons

    def _gcs_token(self, datastack_name: str, skeleton_version: int, verbose_level: Any) -> dict:
        """The bucket token, reused until 5 minutes before it expires."""
        key = (datastack_name, skeleton_version)
        cached = self._gcs_token_cache.get(key)
        if cached is not None and cached.get("expiry"):
            expiry = datetime.fromisoformat(cached["expiry"])
            if expiry.tzinfo is None:
                expiry = expiry.replace(tzinfo=timezone.utc)
            if datetime.now(tz=timezone.utc) + timedelta(minutes=5) < expiry:
                return cached
        url = self._url("get_skeleton_token_as_post", datastack_name=datastack_name, skeleton_version=skeleton_version)
        response = self.session.post(url, json={"verbose_level": verbose_level})
        if response.status_code == 501:
            try:
                reason = response.json().get("message", "")
            except ValueError:
                reason = response.text
            raise SkeletonBucketUnavailable(
                f"The skeleton service at {self.server_address} keeps no cloud bucket of skeletons, "
                f"so fetch_skeletons(method='gcs') cannot be used; use method='server'. ({reason})",
                response=response,
            )
        token = handle_response(response)
        self._gcs_token_cache[key] = token
        return token


# -- decoding helpers -------------------------------------------------------------------------------


def _decode_bulk(answer: dict[str, str], endpoint_format: str) -> dict[str, Any]:
    """``{rid: hex}`` → ``{rid: skeleton}``; sentinels are skipped, undecodable entries logged."""
    skeletons: dict[str, Any] = {}
    for rid, value in answer.items():
        try:
            decoded = codec.decode_bulk_entry(endpoint_format, value)
        except Exception as error:  # noqa: BLE001 - one bad entry must not lose the others
            logger.error(f"Error decompressing skeleton for root_id {rid}: {error}")
            continue
        if decoded is not None:
            skeletons[rid] = decoded
    return skeletons


def _flatten_vertex_properties(skeleton: dict[str, Any]) -> dict[str, Any]:
    """Servers before 0.6.0 nest vertex properties; caveclient lifts them to the top level."""
    for key, value in skeleton.pop("vertex_properties", {}).items():
        skeleton[key] = value
    return skeleton
