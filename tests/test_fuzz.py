"""Fuzzing: no input makes the server answer 500.

Schemathesis generates requests from the server's own OpenAPI document (so every declared path,
query and body parameter is exercised, valid and invalid), and a body fuzzer sends malformed
bodies of every shape to every operation that takes one. Both are bounded in time. Each runs on
its own server, with a superadmin token, because fuzzing changes and deletes what it can.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import opencave

DS = "opencave_demo"
SCHEMATHESIS_SECONDS = 25  # per storage engine
BODY_FUZZ_SECONDS = 8
# 501 is a declared answer ("not served yet"), not a failure.
CHECKS = """
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "501"]
"""
# Operations that revoke the fuzzer's own token: fuzzed last, on their own, so the main run keeps
# its credentials and reaches every other operation.
TOKEN_KILLERS = r"(refresh_token|logout|/token/\{token_id\}|/tokens/\{token_id\}/revoke)"


def _config(server, token: str) -> str:
    """Schemathesis settings: the checks, and real names and ids of the demo as likely values of
    path parameters (the rest stays generated), so requests get past the 404s to the logic."""
    headers = {"Authorization": f"Bearer {token}"}
    tables = requests.get(f"{server.url}/annotation/api/v2/aligned_volume/{DS}/table", headers=headers, timeout=30).json()
    rows = requests.post(
        f"{server.url}/materialize/api/v3/datastack/{DS}/version/1/table/nucleus_detection/query",
        params={"return_pyarrow": "false", "arrow_format": "false"}, json={"limit": 5}, headers=headers, timeout=60,
    ).json()  # fmt: skip
    roots = sorted({int(row["pt_root_id"]) for row in rows} | {int(row["pt_supervoxel_id"]) for row in rows})
    dictionaries = {
        "names": [DS],
        "tables": tables,
        "nodes": roots,
        "versions": [1, 2],
        "schemas": ["synapse", "cell_type_local", "nucleus_detection"],
    }
    bindings = {
        "names": ["datastack_name", "datastack", "aligned_volume_name", "aligned_volume", "table_id"],
        "tables": ["table_name"],
        "nodes": ["root_id", "node_id", "supervoxel_id", "root_id_prefixes"],
        "versions": ["version"],
        "schemas": ["schema_type"],
    }
    lines = [CHECKS, "[dictionaries]"]
    dictionaries = {name: values for name, values in dictionaries.items() if values}
    lines += [f"{name} = {{ values = {json.dumps(values)} }}" for name, values in dictionaries.items()]
    lines.append("[parameters]")
    for dictionary, parameters in bindings.items():
        if dictionary not in dictionaries:
            continue
        lines += [f'"path.{parameter}" = {{ dictionary = "{dictionary}", probability = 0.8 }}' for parameter in parameters]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fuzz_server(backend, server_factory):
    server = server_factory(backend)
    return server, server.new_token()


def _operations(server) -> list[tuple[str, str, dict]]:
    document = requests.get(f"{server.url}/api/openapi.json", timeout=30).json()
    return [(method.upper(), path, operation) for path, item in document["paths"].items() for method, operation in item.items()]


# CAVE's writing operations that take everything from the path and query string.
BODYLESS_WRITES = {
    ("POST", "/schema/api/v2/types"),
    ("POST", "/jobs/api/v1/jobs/{job_id}/cancel"),  # the job is named by the path
    *{("POST", f"/materialize/api/{v}/materialize/run/{kind}/datastack/{{datastack_name}}/{{table_name}}") for v in ("v2", "v3") for kind in ("lookup_svid", "ingest_annotations")},
}
SERVER = Path(opencave.__file__).parent / "server"
ROUTER_SOURCES = sorted([*(SERVER / "routers").glob("*.py"), *(SERVER / "web").glob("*.py")])


# Web pages (left out of the API document) whose filters are named after the columns of the table
# shown (``f.<column>``): read in one place, each checked against the table's columns and limits.
PER_COLUMN_QUERY = {"mat_views.py"}


def test_openapi_declares_inputs(fuzz_server):
    """Every operation that reads a body says so, and query parameters are declared."""
    server, _ = fuzz_server
    operations = _operations(server)
    assert len(operations) > 100
    undeclared = {(m, p) for m, p, op in operations if m in ("POST", "PUT", "PATCH") and "requestBody" not in op}
    assert undeclared == BODYLESS_WRITES, f"writing operations that declare no body: {sorted(undeclared - BODYLESS_WRITES)}"
    with_query = sum(1 for _, _, op in operations if any(p.get("in") == "query" for p in op.get("parameters", [])))
    assert with_query > 40, with_query


def test_routers_read_no_undeclared_input():
    """Handlers take query strings and bodies as declared parameters, not from the raw request;
    a raw body is read only by operations that declare it (``openapi_extra``)."""
    for source in ROUTER_SOURCES:
        text = source.read_text()
        if source.name not in PER_COLUMN_QUERY:
            assert "query_params" not in text, f"{source} reads the query string by hand"
        else:
            assert text.count("query_params") == 1 and "parse_filters(found, request.query_params)" in text
        assert "request.json()" not in text and "request.form()" not in text, f"{source} parses a body by hand"
        if "await request.body()" in text:
            assert "binary_body(" in text or "json_text_body(" in text, f"{source} reads a raw body without declaring it"


def _schemathesis(server, token: str, workdir: Path, seconds: int, *selection: str) -> subprocess.CompletedProcess:
    config = workdir / "schemathesis.toml"
    if not config.exists():  # made once: the run deletes the tables and versions it names
        config.write_text(_config(server, token))
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
        f"{server.url}/api/openapi.json",
        "--checks", "not_a_server_error",
        "--max-time", str(seconds),
        "--seed", "1",
        "--workers", "1",  # hypothesis describes filters thread-unsafely: 2 workers flake
        "--request-timeout", "60",
        "--generation-database", "none",
        "--report", "junit", "--report-dir", str(workdir / "report"),
        "-H", f"Authorization: Bearer {token}",
        *selection,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=seconds * 4 + 120)


def test_schemathesis_finds_no_server_error(fuzz_server, tmp_path):
    server, token = fuzz_server
    run = _schemathesis(server, token, tmp_path, SCHEMATHESIS_SECONDS, "--exclude-path-regex", TOKEN_KILLERS)
    output = run.stdout[-12000:] + run.stderr[-4000:]
    assert run.returncode == 0, output
    # the token survived the run, so every operation was reached with credentials
    assert requests.get(f"{server.url}/auth/api/v1/user/me", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
    last = _schemathesis(server, token, tmp_path, 15, "--include-path-regex", TOKEN_KILLERS)
    assert last.returncode == 0, last.stdout[-8000:] + last.stderr[-2000:]


# -- the body fuzzer ---------------------------------------------------------------------------
_SCALARS = [
    None, True, False, 0, -1, 1, 2**63, 2**64, -(2**63) - 1, 10**400, 1.5, float("1e308"),
    "", "x", "1,2,3", "\ud800", "\x00", "null", "NaN", "Infinity", "-1e999", "2024-13-45T99:99:99",
    "a" * 10_000, "🧠", "[]", "{}", "1-2_3-4_5-6", "1e300-1e301_0-1_0-1",
]  # fmt: skip


def _value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice(_SCALARS)
    if roll < 0.75:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    keys = ["node_ids", "root_ids", "ids", "timestamp", "annotations", "filter_in_dict", "table", "tables", "bounds",
            "sources", "sinks", "name", "description", "schema_type", "voxel_resolution", "days_to_expire",
            "select_columns", "suffixes", "limit", "desired_resolution", "root_id", "skeleton_version", "x"]  # fmt: skip
    return {rng.choice(keys): _value(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def _raw_body(rng: random.Random) -> bytes:
    choice = rng.random()
    if choice < 0.6:
        return json.dumps(_value(rng), allow_nan=True).encode("utf-8", "surrogatepass")
    if choice < 0.8:
        return bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 7, 8, 16, 64, 1000])))
    return rng.choice([b"", b"{", b"[1,2", b'{"a": NaN}', b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b'"' + b"\\ud800" + b'"'])


def _concrete(path: str) -> str:
    """A path with its parameters filled with values that reach past routing, for the demo."""
    names = {
        "datastack_name": "opencave_demo", "datastack": "opencave_demo", "aligned_volume_name": "opencave_demo",
        "aligned_volume": "opencave_demo", "table_id": "opencave_demo", "table_name": "synapses", "cg_server_address": "",
        "version": "1", "namespace": "pychunkedgraph", "service_namespace": "pychunkedgraph",
    }  # fmt: skip
    out = path
    while "{" in out:
        start = out.index("{")
        end = out.index("}", start)
        name = out[start + 1 : end].split(":")[0]
        out = out[:start] + names.get(name, "1") + out[end + 1 :]
    return out


def test_body_fuzzer_finds_no_server_error(fuzz_server):
    server, token = fuzz_server
    rng = random.Random(20261203)
    writes = [(m, p) for m, p, _ in _operations(server) if m in ("POST", "PUT", "PATCH", "DELETE")]
    targets = [(m, _concrete(p)) for m, p in writes if not re.search(TOKEN_KILLERS, p)]
    failures: list[str] = []
    deadline = time.time() + BODY_FUZZ_SECONDS
    sent = 0
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        while time.time() < deadline:
            method, path = rng.choice(targets)
            body = _raw_body(rng)
            content_type = rng.choice(["application/json", "application/octet-stream", "text/plain", None])
            headers = {"Content-Type": content_type} if content_type else {}
            answer = session.request(method, f"{server.url}{path}", data=body, headers=headers, timeout=60)
            sent += 1
            if answer.status_code >= 500 and answer.status_code != 501:
                failures.append(f"{method} {path} {body[:200]!r} -> {answer.status_code} {answer.text[:300]}")
            elif answer.status_code >= 400:
                assert answer.headers.get("content-type", "").startswith("application/json"), (method, path, answer.text[:200])
    assert sent > 50
    assert not failures, "\n".join(failures[:20])
