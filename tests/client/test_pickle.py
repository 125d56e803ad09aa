"""Clients and every sub-client survive pickling and deep copies (multiprocessing, joblib and
dask send clients to workers this way), and the copies still talk to the server."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from opencave import CAVEclient

DS = "opencave_demo"

COPIES: dict[str, Callable[[Any], Any]] = {
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "deepcopy": copy.deepcopy,
}


def touch_everything(client: Any) -> dict[str, Any]:
    """Build every sub-client and fill its caches with a call; the answers, to compare."""
    answers = {
        "auth": [t["token"] for t in client.auth.get_tokens()],
        "info": client.info.get_datastacks(),
        "schema": client.schema.get_schemas(),
        "state": client.state.get_state_json(client.state.upload_state_json({"layers": []})),
    }
    if client.datastack_name is not None:
        answers.update(
            annotation=sorted(client.annotation.get_tables()),
            materialize=(client.materialize.get_versions(), sorted(client.materialize.get_tables())),
            tables=(str(client.materialize.tables), len(client.materialize.tables.cell_types().query())),
            chunkedgraph=client.chunkedgraph.segmentation_info["graph"]["chunk_size"],
            l2cache=sorted(client.l2cache.attributes),
            skeleton=client.skeleton.get_versions(),
        )
    return answers


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("datastack", [None, DS], ids=["global", "datastack"])
def test_copies_of_a_used_client_work(server, admin_token, datastack, how):
    client = CAVEclient(datastack, server_address=server.url, auth_token=admin_token)
    before = touch_everything(client)

    copied = COPIES[how](client)

    assert type(copied) is type(client) and copied is not client
    assert copied.auth.token == admin_token
    assert touch_everything(copied)["info"] == before["info"]
    after = touch_everything(copied)
    after.pop("state"), before.pop("state")  # the same document, posted again under a new id
    assert after == before
    # Sub-clients are the copy's own and still belong to it.
    if datastack is not None:
        assert copied.materialize is not client.materialize
        assert copied.materialize.fc is copied
        assert copied.version is None and copied.materialize.version == client.materialize.version


@pytest.mark.parametrize("how", sorted(COPIES))
def test_sub_clients_copy_on_their_own(server, admin_token, how):
    client = CAVEclient(DS, server_address=server.url, auth_token=admin_token, timeout=(3, 60))
    touch_everything(client)
    for name in ("auth", "info", "schema", "state", "annotation", "materialize", "chunkedgraph", "l2cache", "skeleton"):
        original = getattr(client, name)
        copied = COPIES[how](original)
        assert type(copied) is type(original), name
        if name != "auth":
            assert copied.session.timeout == (3, 60), name
    assert COPIES[how](client.materialize).get_versions() == client.materialize.get_versions()
    assert COPIES[how](client.chunkedgraph).get_oldest_timestamp() == client.chunkedgraph.get_oldest_timestamp()


def test_a_version_pinned_client_keeps_its_version(server, admin_token):
    client = CAVEclient(DS, server_address=server.url, auth_token=admin_token)
    version = client.materialize.most_recent_version()
    client.version = version
    copied = pickle.loads(pickle.dumps(client))
    assert copied.version == version and copied.timestamp == client.timestamp
    assert copied.materialize.get_timestamp() == client.materialize.get_timestamp()
