"""Benchmark: authenticated info requests and server start-up (issue targets in bench/RESULTS.md).

Measures, against a real ``opencave serve`` process on loopback:
  * p50/p99 latency of one authenticated ``GET /info/api/v2/datastack/full/{ds}`` at a time;
  * requests/s and latency with 16 concurrent connections (``wrk -t2 -c16``);
  * the same with authentication switched off (the floor), and the ratio;
  * time from ``opencave serve`` on an empty data directory to the first answered request.

Usage: python bench/bench_auth_info.py [--database URL] [--seconds 10]
Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import http.client
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATH = "/info/api/v2/datastack/full/opencave_demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, port: int, database: str | None, *extra: str) -> tuple[subprocess.Popen, float]:
    command = [sys.executable, "-m", "opencave", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    command += ["--no-access-log", "--log-level", "warning", *extra]
    if database:
        command += ["--database", database]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/info/version")
            if connection.getresponse().status == 200:
                return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
        if process.poll() is not None:
            raise RuntimeError("server exited during start-up")


def token_for(data_dir: Path, database: str | None) -> str:
    command = [sys.executable, "-m", "opencave", "token", "create", "admin@localhost", "--data-dir", str(data_dir)]
    if database:
        command += ["--database", database]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def sequential_latency(port: int, headers: dict, count: int = 3000) -> tuple[float, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    samples = []
    for i in range(count + 200):
        start = time.perf_counter()
        connection.request("GET", PATH, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        if i >= 200:
            samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.99)] * 1000


def wrk(port: int, headers: dict, seconds: int) -> tuple[float, float]:
    args = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    output = subprocess.run(args + [f"http://127.0.0.1:{port}{PATH}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p50.group(2)]
    if "Non-2xx" in output:
        raise RuntimeError("wrk saw error responses:\n" + output)
    return rps, float(p50.group(1)) * scale


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", help="PostgreSQL URL of an empty database (default: SQLite)")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    root = Path(tempfile.mkdtemp(prefix="opencave-bench-"))
    try:
        port = free_port()
        server, startup = start_server(root / "data", port, args.database)
        token = token_for(root / "data", args.database)
        auth = {"Authorization": f"Bearer {token}"}
        seq_p50, seq_p99 = sequential_latency(port, auth)
        rps, load_p50 = wrk(port, auth, args.seconds)
        server.terminate()
        server.wait()

        port = free_port()
        server, _ = start_server(root / "data", port, args.database, "--no-auth")
        floor_seq_p50, _ = sequential_latency(port, {})
        floor_rps, floor_load_p50 = wrk(port, {}, args.seconds)
        server.terminate()
        server.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    engine = "PostgreSQL" if args.database else "SQLite"
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, Python {platform.python_version()}, storage {engine}")
    print(f"start-up, empty data dir -> first answer: {startup:.2f} s   (target < 3 s)")
    print(f"sequential p50 / p99, authenticated:      {seq_p50:.2f} / {seq_p99:.2f} ms   (target p50 < 5 ms)")
    print(f"sequential p50, auth off (floor):         {floor_seq_p50:.2f} ms   ratio {seq_p50 / floor_seq_p50:.2f}")
    print(f"16 connections, authenticated:            {rps:.0f} req/s, p50 {load_p50:.2f} ms   (target >= 1000 req/s)")
    print(f"16 connections, auth off (floor):         {floor_rps:.0f} req/s, p50 {floor_load_p50:.2f} ms")
    print(f"throughput ratio auth / no-auth:          {rps / floor_rps:.2f}")


if __name__ == "__main__":
    main()
