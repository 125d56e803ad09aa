"""Constants and helpers shared by the client tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import responses

GLOBAL = "https://global.daf-apis.com"  # the default global server
SERVER = "https://cave.example.org"  # another deployment's global server
LOCAL = "https://local.example.org"  # its datastacks' local server
DATASTACK = "test_stack"
TOKEN = "a" * 32
OTHER_TOKEN = "b" * 32
THIRD_TOKEN = "c" * 32


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def token_file(secrets: Path, server: str) -> Path:
    return secrets / f"{server.split('://', 1)[1]}-cave-secret.json"


def datastack_record(local_server: str = LOCAL, name: str = DATASTACK, **extra: Any) -> dict[str, Any]:
    record = {
        "viewer_site": "https://neuroglancer.example.org",
        "aligned_volume": {
            "name": "test_volume",
            "image_source": "precomputed://gs://bucket/images",
            "id": 1,
            "description": "volume",
        },
        "synapse_table": "synapses",
        "description": name,
        "local_server": local_server,
        "segmentation_source": f"graphene://{local_server}/segmentation/table/test_v1",
        "soma_table": "somas",
        "analysis_database": None,
        "viewer_resolution_x": 4.0,
        "viewer_resolution_y": 4.0,
        "viewer_resolution_z": 40,
    }
    record.update(extra)
    return record


def mock_info_service(
    rsps: responses.RequestsMock,
    server: str = SERVER,
    datastacks: dict[str, dict[str, Any]] | None = None,
    version: str | None = "4.3.3",
    token: str | None = None,
) -> None:
    """Serve an info service at ``server``; with ``token``, other tokens get a 401."""
    datastacks = {DATASTACK: datastack_record()} if datastacks is None else datastacks

    def authorized(request) -> bool:
        return token is None or request.headers.get("Authorization") == f"Bearer {token}"

    def reply(body: Any):
        def callback(request):
            if not authorized(request):
                return 401, {"content-type": "application/json"}, json.dumps({"code": 401, "message": "bad token"})
            return 200, {"content-type": "application/json"}, json.dumps(body)

        return callback

    if version is None:
        rsps.add(responses.GET, f"{server}/info/version", status=404)
    else:
        rsps.add(responses.GET, f"{server}/info/version", json=version)
    rsps.add_callback(responses.GET, f"{server}/info/api/v2/datastacks", callback=reply(sorted(datastacks)))
    for name, record in datastacks.items():
        rsps.add_callback(
            responses.GET,
            re.compile(re.escape(f"{server}/info/api/v2/datastack/full/{name}") + r"(\?.*)?$"),
            callback=reply(record),
        )


def no_cave_files_written(secrets: Path) -> bool:
    return not secrets.exists() or not any(p.name.endswith(".json") for p in secrets.iterdir())
