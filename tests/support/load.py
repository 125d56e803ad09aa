"""A bounded loopback load on one or several ``opencave serve`` processes: clients in threads,
each on one process (round robin), mixing materialize queries on a version, live queries, root
lookups and edits. Used by ``bench/bench_load.py`` and by the bounded test in
``tests/test_multiprocess.py``.

Any 5xx answer or transport failure is an error. Edits are merges and splits of a pair of
touching supervoxels of two neurons: each editing client has its own pair, and a few share one
on purpose, so their edits meet; a 400 answer to those ("already one object", "not in one
object") is a *conflict*, counted apart.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import requests

DS = "opencave_demo"
CG = "/segmentation/api/v1/table/opencave_demo"
MAT = f"/materialize/api/v3/datastack/{DS}"
KINDS = ("query", "live", "roots", "edit")


@dataclass(frozen=True)
class Plan:
    """What the clients ask: fixed by ``prepare`` so every run of a mix asks the same."""

    version: int
    neurons: list[int]  # roots at ``moment`` (and at the version) whose synapses are queried
    version_neurons: list[int]
    moment: str  # ISO time of the live queries
    supervoxels: np.ndarray  # for root lookups
    edit_pairs: list[tuple[int, int]]  # touching supervoxels of two neurons; no neuron in two pairs


def _arrow_rows(response: requests.Response) -> int:
    return pa.ipc.open_stream(response.content).read_all().num_rows


def disjoint_neuron_pairs(world) -> list[tuple[int, int]]:
    """Touching supervoxels of two neurons, largest contact first, no neuron in two pairs: edits
    of different pairs never touch the same object."""
    graph = world.graph
    neuron = dict(zip(graph.sv_ids.tolist(), graph.sv_neuron.tolist()))
    used: set[int] = set()
    pairs = []
    for a, b in graph.edges[np.argsort(-graph.area, kind="stable")].tolist():
        na, nb = neuron[a], neuron[b]
        if na == nb or 0 in (na, nb) or {na, nb} & used:
            continue
        used |= {na, nb}
        pairs.append((a, b))
    return pairs


def prepare(url: str, token: str, world, version: int | None = None, lookup_size: int = 100) -> Plan:
    """Choose the neurons, supervoxels and edit pairs (from the demo world) and check that the
    queries answer rows."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    if version is None:
        version = max(session.get(url + f"/materialize/api/v2/datastack/{DS}/versions").json())
    pairs = disjoint_neuron_pairs(world)
    somata = world.soma_supervoxels
    moment = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).isoformat()
    now_roots = np.frombuffer(
        session.post(url + CG + "/roots_binary", data=somata.astype("<u8").tobytes(), params={"timestamp": dt.datetime.fromisoformat(moment).timestamp()}).content,
        "<u8",
    )
    version_time = session.get(url + f"/materialize/api/v2/datastack/{DS}/version/{version}").json()["time_stamp"]
    stamp = dt.datetime.fromisoformat(version_time).replace(tzinfo=dt.timezone.utc).timestamp()
    version_roots = np.frombuffer(
        session.post(url + CG + "/roots_binary", data=somata.astype("<u8").tobytes(), params={"timestamp": stamp}).content, "<u8"
    )
    rng = np.random.default_rng(0)
    plan = Plan(
        version=version,
        neurons=[int(r) for r in now_roots],
        version_neurons=[int(r) for r in version_roots],
        moment=moment,
        supervoxels=rng.choice(world.graph.sv_ids, size=min(lookup_size, world.graph.sv_ids.size), replace=False).astype("<u8"),
        edit_pairs=pairs,
    )
    probe = Client(session, url, plan, 0, None, timeout_s=60)
    assert _arrow_rows(probe.query()) > 0 and _arrow_rows(probe.live()) > 0, "the queries of the load answer no rows"
    return plan


@dataclass
class Client:
    """One simulated user on one process."""

    session: requests.Session
    url: str
    plan: Plan
    number: int
    pair: tuple[int, int] | None  # the supervoxels this client merges and splits, if it edits
    timeout_s: float = 120
    merged: bool = False
    step: int = 0

    def neuron(self, roots: list[int]) -> int:
        return roots[(self.number + self.step) % len(roots)]

    def query(self) -> requests.Response:
        body = {"filter_in_dict": {"synapses": {"post_pt_root_id": [self.neuron(self.plan.version_neurons)]}}}
        return self.session.post(self.url + MAT + f"/version/{self.plan.version}/table/synapses/query", json=body, params={"split_positions": "true"}, timeout=self.timeout_s)

    def live(self) -> requests.Response:
        body = {"table": "synapses", "timestamp": self.plan.moment, "filter_in_dict": {"synapses": {"pre_pt_root_id": [self.neuron(self.plan.neurons)]}}}
        return self.session.post(self.url + MAT + "/query", json=body, params={"split_positions": "true"}, timeout=self.timeout_s)

    def roots(self) -> requests.Response:
        return self.session.post(self.url + CG + "/roots_binary", data=self.plan.supervoxels.tobytes(), timeout=self.timeout_s)

    def roots_of(self, supervoxels) -> requests.Response:
        data = np.asarray(supervoxels, dtype="<u8").tobytes()
        return self.session.post(self.url + CG + "/roots_binary", data=data, timeout=self.timeout_s)

    def edit(self) -> requests.Response:
        a, b = self.pair
        if self.merged:
            response = self.session.post(
                self.url + CG + "/split", json={"sources": [[a, 0, 0, 0]], "sinks": [[b, 0, 0, 0]]}, params={"mincut": "false"}, timeout=self.timeout_s
            )
        else:
            response = self.session.post(self.url + CG + "/merge", json=[[a, 0, 0, 0], [b, 0, 0, 0]], timeout=self.timeout_s)
        if response.status_code == 200 or response.status_code == 400:
            self.merged = not self.merged  # after a conflict the pair is most likely in the other state
        return response

    def schedule(self) -> list[str]:
        """One round of this client's requests: queries and lookups, and an edit if it edits."""
        return ["roots", "query", "roots", "live"] + (["edit"] if self.pair else [])


@dataclass
class LoadResult:
    processes: int
    clients: int
    duration_s: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + self.conflicts + len(self.errors)

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s

    def percentiles(self, kind: str) -> tuple[float, float, float]:
        values = np.array(self.latencies.get(kind) or [np.nan]) * 1000
        return tuple(float(np.percentile(values, q)) for q in (50, 90, 99))  # type: ignore[return-value]

    def table(self) -> str:
        """Markdown rows: kind, count, p50, p90, p99 (ms) of the successful answers."""
        lines = ["| kind | answered | p50 | p90 | p99 |", "|---|---|---|---|---|"]
        for kind in KINDS:
            p50, p90, p99 = self.percentiles(kind)
            lines.append(f"| {kind} | {len(self.latencies.get(kind, []))} | {p50:.0f} ms | {p90:.0f} ms | {p99:.0f} ms |")
        return "\n".join(lines)

    def summary(self) -> str:
        return (
            f"{self.processes} process(es), {self.clients} clients, {self.duration_s:.0f} s: {self.requests} requests, "
            f"{self.rate:.1f} requests/s, {len(self.errors)} errors, {self.conflicts} edit conflicts (400)"
        )


def run_load(
    urls: list[str],
    token: str,
    plan: Plan,
    clients: int = 64,
    duration_s: float = 60,
    editors: int = 7,
    contended: int = 2,
    timeout_s: float = 120,
) -> LoadResult:
    """``clients`` threads for ``duration_s``, client i on ``urls[i % len(urls)]``. The first
    ``editors`` clients edit; the last ``contended`` of them share the first editor's pair."""
    own = editors - contended
    if own > len(plan.edit_pairs):
        raise ValueError(f"{own} editors need {own} pairs of neurons; the world has {len(plan.edit_pairs)}")
    result = LoadResult(len(urls), clients, duration_s)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def work(number: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        pair = None
        if number < own:
            pair = plan.edit_pairs[number]
        elif number < editors:
            pair = plan.edit_pairs[0]
        client = Client(session, urls[number % len(urls)], plan, number, pair, timeout_s=timeout_s)
        latencies: dict[str, list[float]] = defaultdict(list)
        conflicts, errors = 0, []
        if pair:  # an earlier run may have left the pair merged
            try:
                found = np.frombuffer(client.roots_of(pair).content, "<u8")
                client.merged = bool(found[0] == found[1])
            except requests.RequestException as error:
                errors.append(f"roots: {type(error).__name__}: {error}")
        start.wait()
        while time.monotonic() < deadline[0]:
            for kind in client.schedule():
                began = time.monotonic()
                try:
                    response = getattr(client, kind)()
                    content = response.content  # the whole answer, as a client reads it
                except requests.RequestException as error:
                    errors.append(f"{kind}: {type(error).__name__}: {error}")
                    continue
                took = time.monotonic() - began
                if response.status_code == 200 and content is not None:
                    latencies[kind].append(took)
                elif kind == "edit" and response.status_code == 400:
                    conflicts += 1
                else:
                    errors.append(f"{kind}: {response.status_code} {response.text[:300]}")
                client.step += 1
                if time.monotonic() >= deadline[0]:
                    break
        with lock:
            for kind, values in latencies.items():
                result.latencies[kind].extend(values)
            result.conflicts += conflicts
            result.errors.extend(errors)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + duration_s
    began = time.monotonic()
    start.wait()
    for thread in threads:
        thread.join(duration_s + timeout_s)
    result.duration_s = time.monotonic() - began
    return result
