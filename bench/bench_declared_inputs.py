"""Benchmark: what declaring every input (pydantic-validated path, query and body parameters) costs.

Runs two ``opencave serve`` processes side by side on loopback — this checkout and a baseline
checkout (a ``src`` directory of an older commit, e.g. made with ``git worktree add``) — and
measures them in interleaved rounds, so machine noise hits both alike:
  * the authenticated info request ``GET /info/api/v2/datastack/full/{ds}`` (target: the
    declared-input layer adds < 0.2 ms per request);
  * a chunkedgraph request with query parameters
    ``GET /segmentation/api/v1/table/{t}/node/{sv}/root?timestamp=…&stop_layer=…``.

Usage: python bench/bench_declared_inputs.py --baseline-src /tmp/base/src [--rounds 6]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_auth_info import free_port

INFO = "/info/api/v2/datastack/full/opencave_demo"
TABLE = "/segmentation/api/v1/table/opencave_demo"


def start(data_dir: Path, src: Path | None, world_cache: Path) -> tuple[subprocess.Popen, int, str]:
    """A server on ``data_dir`` running the code in ``src`` (None: this checkout); its port and a token."""
    env = dict(os.environ, OPENCAVE_WORLD_CACHE=str(world_cache))
    if src is not None:
        env["PYTHONPATH"] = str(src)
    port = free_port()
    command = [sys.executable, "-m", "opencave", "serve", "--data-dir", str(data_dir), "--port", str(port), "--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/info/version")
            if connection.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.05)
        if process.poll() is not None:
            raise RuntimeError("server exited during start-up")
    token_command = [sys.executable, "-m", "opencave", "token", "create", "admin@localhost", "--data-dir", str(data_dir)]
    token = subprocess.run(token_command, env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return process, port, token


def get_json(port: int, path: str, token: str):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200, (path, response.status, body[:300])
    return json.loads(body)


def latencies(port: int, path: str, token: str, count: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {token}"}
    samples = []
    for i in range(count + 100):
        start = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, (path, response.status)
        if i >= 100:
            samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-src", type=Path, required=True, help="the src directory of the baseline checkout")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=1500, help="requests per round and server")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="opencave-bench-inputs-"))
    servers = {}
    try:
        world_cache = root / "worlds"
        servers["baseline"] = start(root / "baseline", args.baseline_src.resolve(), world_cache)
        servers["current"] = start(root / "current", None, world_cache)
        _, port, token = servers["current"]
        sv = _some_supervoxel(port, token)
        root_path = f"{TABLE}/node/{sv}/root?timestamp={time.time():.3f}&stop_layer=3"
        results = {name: {"info": [], "root": []} for name in servers}
        for _ in range(args.rounds):
            for name, (_, port_, token_) in servers.items():
                results[name]["info"].append(statistics.median(latencies(port_, INFO, token_, args.requests)) * 1000)
                results[name]["root"].append(statistics.median(latencies(port_, root_path, token_, args.requests)) * 1000)
    finally:
        for process, _, _ in servers.values():
            process.terminate()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, Python {platform.python_version()}, storage SQLite")
    print(f"{args.rounds} interleaved rounds of {args.requests} sequential requests per server; median of round medians")
    for request in ("info", "root"):
        base = statistics.median(results["baseline"][request])
        current = statistics.median(results["current"][request])
        print(f"{request:5s} p50 baseline {base:.3f} ms   current {current:.3f} ms   added {current - base:+.3f} ms   ratio {current / base:.3f}")


def _some_supervoxel(port: int, token: str) -> int:
    """A supervoxel id of the demo graph: the presynaptic supervoxel of a synapse of version 1."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request(
        "POST",
        "/materialize/api/v3/datastack/opencave_demo/version/1/table/synapses/query?return_pyarrow=false&arrow_format=false",
        body=json.dumps({"limit": 1}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    payload = response.read()
    assert response.status == 200, payload[:300]
    row = json.loads(payload)[0]
    return int(row["pre_pt_supervoxel_id"])


if __name__ == "__main__":
    main()
