"""First start of a store: complete, repeatable, and finished by the next start if interrupted."""

from __future__ import annotations

import pytest

from opencave.config import resolve_settings
from opencave.demo.registration import DEMO_DATASET, DEMO_DATASTACK
from opencave.runtime import Runtime


@pytest.fixture(params=["sqlite", "postgresql"])
def runtime(request, tmp_path, database_for):
    opened = Runtime.open(resolve_settings(str(tmp_path / "data"), database_for(request.param)))
    yield opened
    opened.close()


def test_first_start_sets_everything_up_once(runtime):
    first = runtime.initialise()
    assert first is not None and len(first.admin_password) >= 12
    assert runtime.info.datastack_names() == [DEMO_DATASTACK]
    assert runtime.initialise() is None, "a second start creates nothing new"
    assert [u.email for u in runtime.accounts.find_users()] == ["admin@localhost"]
    grants = {(g["group"], g["permission"]) for g in runtime.access.grants(DEMO_DATASET)}
    assert grants == {("default", "view"), ("default", "edit")}


def test_interrupted_first_start_is_completed(runtime):
    runtime.access.seed_permissions()
    runtime.accounts.create_user("admin@localhost", "admin", admin=True, password="x" * 12)
    runtime.access.create_dataset(DEMO_DATASET)  # killed here, before the demo was registered
    assert runtime.initialise() is None
    assert runtime.info.datastack_names() == [DEMO_DATASTACK]
    assert runtime.identities.dataset_of("datastack", DEMO_DATASTACK, _generations(runtime)) == DEMO_DATASET


def test_migrations_are_idempotent(runtime):
    from opencave.storage.sql import upgrade_schema

    upgrade_schema(runtime.engine)
    upgrade_schema(runtime.engine)


def _generations(runtime):
    from opencave.storage.sql import reader
    from opencave.storage.state import read_generations

    with reader(runtime.engine).connect() as conn:
        return read_generations(conn)
