"""The skeleton service: skeletons of root ids, made once, kept, and served in every encoding.

A root id never changes, so its skeleton is made once (per datastack) and stored in the SQL
store, where every server process finds it; an edit makes new roots, which get their own
skeletons, while the old root keeps the skeleton of its own time. Each process also keeps a
small LRU of encoded answers so repeated requests skip decoding and re-encoding.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from opencave.errors import BadRequest, Forbidden, NotFound
from opencave.services.jobs.queue import JobQueue
from opencave.services.annotation import AnnotationService
from opencave.services.annotation.service import GRAPHENE
from opencave.services.chunkedgraph.service import GraphHandle, GraphService
from opencave.services.info import InfoRegistry
from opencave.services.l2cache.cache import L2Cache
from opencave.wire import skeletons as wire

from . import formats
from .builder import build_skeleton
from .inputs import RootCheck, check_root, invalidation_distance, require_root, root_graph
from .model import GENERATOR, Skeleton, from_payload, to_payload
from .soma import find_soma
from .store import SkeletonStore

log = logging.getLogger("opencave.skeleton")

MAX_SYNC_BULK = 10
MAX_CACHED_BULK = 500
MAX_ASYNC_BULK = 10000
ANSWER_CACHE_BYTES = 64 * 1024 * 1024
SKELETON_CACHE_ENTRIES = 256
GENERATE_JOB = "skeleton.generate"  # the queued job that makes skeletons asked for asynchronously


class _AnswerCache:
    """A byte-bounded LRU of encoded answers."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, formats.Encoded] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> formats.Encoded | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple, item: formats.Encoded) -> None:
        size = len(item.body)
        if size > self.max_bytes // 8:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old.body)
            self._items[key] = item
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped.body)


class SkeletonService:
    def __init__(
        self,
        store: SkeletonStore,
        info: InfoRegistry,
        graphs: GraphService,
        l2cache: L2Cache,
        annotations: AnnotationService,
        jobs: JobQueue,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.info = info
        self.graphs = graphs
        self.l2cache = l2cache
        self.annotations = annotations
        self._answers = _AnswerCache(ANSWER_CACHE_BYTES)
        self._skeletons: OrderedDict[tuple[str, int], Skeleton] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, int], threading.Lock] = {}
        self._seconds_per_skeleton = 0.2  # running estimate for gen_skeletons answers

    # -- datastack and ids -------------------------------------------------------------------------
    def graph_of(self, datastack: str) -> GraphHandle:
        record = self.info.datastack_info(datastack, "")
        match = GRAPHENE.match(record.get("segmentation_source") or "")
        if not match or not self.graphs.exists(match.group(1)):
            raise NotFound(f"Datastack {datastack!r} has no chunkedgraph segmentation, so it has no skeletons.", code="no_segmentation")
        return self.graphs.graph(match.group(1))

    def check(self, datastack: str, root_id: int) -> None:
        """400 unless ``root_id`` is a root of the datastack; 403 if it is refused."""
        require_root(self.graph_of(datastack).index, root_id)
        self._check_not_refused(datastack, root_id)

    def _check_not_refused(self, datastack: str, root_id: int) -> None:
        if self.store.refused(datastack, [root_id]):
            raise Forbidden(
                f"Root id {root_id} is on the refusal list of {datastack}: this server does not skeletonize it "
                "(ask an administrator to remove it with `opencave skeleton unrefuse`).",
                code="refused_root",
            )

    # -- making and finding skeletons ------------------------------------------------------------------
    def _key_lock(self, key: tuple[str, int]) -> threading.Lock:
        with self._lock:
            lock = self._key_locks.get(key)
            if lock is None:
                if len(self._key_locks) > 4096:
                    self._key_locks = {k: v for k, v in self._key_locks.items() if v.locked()}
                lock = self._key_locks[key] = threading.Lock()
            return lock

    def _remember(self, key: tuple[str, int], sk: Skeleton) -> None:
        with self._lock:
            self._skeletons[key] = sk
            self._skeletons.move_to_end(key)
            while len(self._skeletons) > SKELETON_CACHE_ENTRIES:
                self._skeletons.popitem(last=False)

    def _known(self, key: tuple[str, int]) -> Skeleton | None:
        with self._lock:
            sk = self._skeletons.get(key)
            if sk is not None:
                self._skeletons.move_to_end(key)
            return sk

    def cached(self, datastack: str, root_id: int) -> Skeleton | None:
        """The stored skeleton of a root, or None (never generates)."""
        key = (datastack, root_id)
        sk = self._known(key)
        if sk is None:
            payload = self.store.get(datastack, root_id)
            if payload is not None:
                sk = from_payload(payload)
                self._remember(key, sk)
        return sk

    def make(self, handle: GraphHandle, datastack: str, root_id: int) -> Skeleton:
        """Skeletonize a root now (no cache involved)."""
        graph = root_graph(self.l2cache, handle, root_id, time.time())
        index = handle.index
        record = self.info.datastack_info(datastack, "")
        soma = None
        if record.get("soma_table"):
            supervoxels = index.ids_of(index.leaf_indices(index.node_index([root_id])))
            aligned_volume = self.info.aligned_volume_of(datastack)
            soma = find_soma(self.annotations, aligned_volume, record["soma_table"], supervoxels, graph.timestamp)
        return build_skeleton(graph, datastack, invalidation_distance(index), soma)

    def skeleton(self, datastack: str, root_id: int, handle: GraphHandle | None = None) -> Skeleton:
        """The skeleton of a root: remembered, stored, or made now (once per root at a time)."""
        self._check_not_refused(datastack, root_id)
        return self._skeleton(datastack, root_id, handle)

    def _skeleton(self, datastack: str, root_id: int, handle: GraphHandle | None = None) -> Skeleton:
        """``skeleton`` for a root already checked against the refusal list."""
        key = (datastack, root_id)
        sk = self.cached(datastack, root_id)
        if sk is not None:
            return sk
        handle = handle or self.graph_of(datastack)
        require_root(handle.index, root_id)
        with self._key_lock(key):  # a concurrent request (or the background) may be making it
            sk = self.cached(datastack, root_id)
            if sk is not None:
                return sk
            start = time.perf_counter()
            sk = self.make(handle, datastack, root_id)
            elapsed = time.perf_counter() - start
            self._seconds_per_skeleton = 0.8 * self._seconds_per_skeleton + 0.2 * elapsed
            self.store.put(datastack, root_id, to_payload(sk))
            self._remember(key, sk)
        return sk

    # -- answers -----------------------------------------------------------------------------------------
    def answer(self, datastack: str, root_id: int, version: int, fmt: str) -> formats.Encoded:
        """One skeleton encoded; from the per-process LRU when asked before."""
        if fmt not in wire.OUTPUT_FORMATS or fmt in ("none", "meshwork"):
            raise BadRequest(f"Unknown output format {fmt!r}; use one of {list(wire.OUTPUT_FORMATS)}.", code="bad_format")
        key = (datastack, root_id, version, fmt, GENERATOR)
        found = self._answers.get(key)
        if found is not None:
            self._check_not_refused(datastack, root_id)
            return found
        encoded = formats.encode(self.skeleton(datastack, root_id), version, fmt)
        self._answers.put(key, encoded)
        return encoded

    def bulk_entry(self, sk: Skeleton, version: int, fmt: str) -> str:
        key = (sk.datastack, sk.root_id, version, "bulk:" + fmt, GENERATOR)
        found = self._answers.get(key)
        if found is None:
            found = formats.Encoded(formats.bulk_payload(sk, version, fmt), formats.BINARY)
            self._answers.put(key, found)
        return wire.bulk_entry(found.body)

    # -- bulk and background -------------------------------------------------------------------------------
    def _generate_later(self, datastack: str, root_ids: list[int]) -> int:
        """Queue one job making the roots not stored or refused (any process running jobs takes
        it); returns how many it holds."""
        handle = self.graph_of(datastack)
        stored = self.store.existing(datastack, root_ids)
        refused = self.store.refused(datastack, root_ids)
        wanted = [
            root_id
            for root_id in dict.fromkeys(root_ids)
            if root_id not in stored and root_id not in refused and check_root(handle.index, root_id) == RootCheck.OK
        ]
        if wanted:
            # one root per key: asking again for a skeleton already queued adds nothing
            key = f"skeleton:{datastack}:{wanted[0]}" if len(wanted) == 1 else None
            self.jobs.submit(GENERATE_JOB, {"datastack": datastack, "root_ids": wanted}, priority=-1, key=key)
        return len(wanted)

    def generate(self, datastack: str, root_ids: list[int], progress: Callable[[str], None]) -> dict[str, int]:
        """Make the skeletons of ``root_ids`` (the queued job's work); a root that fails is
        logged and left for a later request, which reports the error itself."""
        made = failed = 0
        for number, root_id in enumerate(root_ids, 1):
            try:
                self.skeleton(datastack, root_id)
                made += 1
            except Exception:
                failed += 1
                log.exception("queued skeleton of %s in %s failed", root_id, datastack)
            progress(f"{number:,}/{len(root_ids):,} skeletons of {datastack}")
        return {"made": made, "failed": failed}

    def generate_async(self, datastack: str, root_ids: list[int]) -> float:
        """Queue skeletons to be made off the request path; an estimate of the seconds it takes."""
        queued = self._generate_later(datastack, root_ids)
        return float(round(queued * self._seconds_per_skeleton, 3))

    def bulk(self, datastack: str, root_ids: list[int], version: int, fmt: str, generate_missing: bool) -> dict[str, str]:
        """``{rid: hex}`` with sentinels: missing ones are made now, or queued and marked "async"."""
        handle = self.graph_of(datastack)
        refused = self.store.refused(datastack, root_ids)
        out: dict[str, str] = {}
        later: list[int] = []
        for root_id in root_ids:
            if root_id in refused:
                continue
            state = check_root(handle.index, root_id)
            if state != RootCheck.OK:
                out[str(root_id)] = state
                continue
            sk = self.cached(datastack, root_id)
            if sk is None and generate_missing:
                sk = self._skeleton(datastack, root_id, handle)
            if sk is None:
                later.append(root_id)
                out[str(root_id)] = wire.BULK_ASYNC
                continue
            out[str(root_id)] = self.bulk_entry(sk, version, fmt)
        if later:
            self._generate_later(datastack, later)
        return out

    def cached_bulk(
        self, datastack: str, root_ids: list[int], version: int, fmt: str, generate_missing: bool
    ) -> dict[str, str]:
        """Only skeletons that exist (made now for the missing ones with ``generate_missing``)."""
        handle = self.graph_of(datastack)
        refused = self.store.refused(datastack, root_ids)
        out: dict[str, str] = {}
        for root_id in root_ids:
            if root_id in refused:
                continue
            sk = self.cached(datastack, root_id)
            if sk is None and generate_missing and check_root(handle.index, root_id) == RootCheck.OK:
                sk = self._skeleton(datastack, root_id, handle)
            if sk is not None:
                out[str(root_id)] = self.bulk_entry(sk, version, fmt)
        return out

    def exists(self, datastack: str, root_ids: list[int]) -> dict[int, bool]:
        stored = self.store.existing(datastack, root_ids)
        return {root_id: root_id in stored for root_id in root_ids}

    def query_cache(self, datastack: str, version: int, prefixes: list[str], limit: int) -> dict[str, Any]:
        """Names of stored skeletons whose root id starts with one of ``prefixes`` (as CAVE lists files)."""
        radius = int(invalidation_distance(self.graph_of(datastack).index))
        files = [
            f"skeleton__v{version}__rid-{rid}__ds-{datastack}__res-1x1x1__cs-True__cr-{radius}.h5.gz"
            for prefix in prefixes
            for rid in self.store.root_ids(datastack, prefix)
        ]
        return {"num_found": len(files), "files": files[:limit] if limit else files}

    # -- refusal list -----------------------------------------------------------------------------------------
    def refusal_list(self, datastack: str) -> bytes:
        self.info.datastack_info(datastack, "")
        return wire.encode_refusal_list(self.store.refusals(datastack))

    def refuse(self, datastack: str, root_id: int) -> bool:
        require_root(self.graph_of(datastack).index, root_id)
        return self.store.refuse(datastack, root_id)

    def unrefuse(self, datastack: str, root_id: int) -> bool:
        self.info.datastack_info(datastack, "")
        return self.store.unrefuse(datastack, root_id)

    # -- info documents ------------------------------------------------------------------------------------------
    def segmentation_info(self, datastack: str, data_dir: str) -> dict[str, Any]:
        """The segmentation's precomputed info, pointing Neuroglancer at the ``skeleton`` directory."""
        info = self.graphs.info(self.graph_of(datastack), data_dir)
        info["skeletons"] = "skeleton"
        return info

