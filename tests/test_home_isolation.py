"""The test suite writes nothing in the user's home, even from module- and session-scoped fixtures.

A representative part of the suite (clients built by module-scoped fixtures, which cache the
datastack's server under ~/.cloudvolume, and an interactive token set-up) runs in a pytest
subprocess whose HOME is a sentinel directory holding a user's files; afterwards the sentinel
must be exactly as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.home import fingerprint

ROOT = Path(__file__).resolve().parent.parent
SUBSET = [
    "tests/test_compat_materialize.py::test_versions_and_metadata[sqlite]",  # module-scoped clients
    "tests/test_setup_flows.py::test_a_new_user_setup_token[sqlite-caveclient]",  # writes token files
]


def _tree(home: Path) -> dict[str, tuple]:
    return {str(p.relative_to(home)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(home.rglob("*"))}


def test_a_test_run_leaves_home_untouched(tmp_path):
    home = tmp_path / "home"
    secrets = home / ".cloudvolume" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "cave_datastack_to_server_map.json").write_text(json.dumps({"opencave_demo": "https://users.own.server"}))
    (secrets / "cave-secret.json").write_text(json.dumps({"token": "f" * 32}))
    before, files_before = _tree(home), fingerprint(str(home))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CLOUD_", "OPENCAVE_"))}
    env["HOME"] = str(home)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"), *SUBSET],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert "2 passed" in run.stdout, run.stdout[-2000:]
    assert _tree(home) == before, "files appeared or changed in HOME"
    assert not fingerprint(str(home)).diff(files_before)
