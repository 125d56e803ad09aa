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
    assert not runtime.anyone_signed_in()
    first = runtime.initialise()
    assert first is not None and len(first.admin_password) >= 12
    assert _password_works(runtime, first.admin_password)
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


def test_first_start_interrupted_after_the_admin_shows_the_password_later(runtime):
    """A first start killed while the demo builds (after the superadmin was created): the next
    start that completes returns the same, working password, once."""
    runtime.prepare()  # what the interrupted start did before the demo
    assert [u.email for u in runtime.accounts.find_users()] == ["admin@localhost"]
    assert runtime.info.datastack_names() == [], "prepare builds nothing"
    first = runtime.initialise()
    assert first is not None and _password_works(runtime, first.admin_password)
    assert runtime.initialise() is None and runtime.take_first_run() is None


def test_admin_commands_take_the_password_once(runtime):
    runtime.prepare()
    runtime.prepare()  # idempotent: one superadmin, one password
    shown = runtime.take_first_run()
    assert shown is not None and _password_works(runtime, shown.admin_password)
    assert runtime.take_first_run() is None
    assert runtime.initialise() is None, "a password already shown is not shown again"


def test_a_password_stored_before_the_admin_is_used_for_it(runtime):
    """Killed between storing the generated password and creating the account: the next start
    creates the account with that same password."""
    from opencave.runtime import ADMIN_PASSWORD_PENDING
    from opencave.storage.state import set_default

    with runtime.engine.begin() as conn:
        set_default(conn, ADMIN_PASSWORD_PENDING, "kept-from-before")
    runtime.prepare()
    assert _password_works(runtime, "kept-from-before")
    assert runtime.take_first_run().admin_password == "kept-from-before"


def test_someone_signed_in_once_a_token_exists(runtime):
    runtime.prepare()
    assert not runtime.anyone_signed_in()
    assert runtime.first_admin_email() == "admin@localhost"
    runtime.tokens.create(runtime.accounts.get_user_by_email("admin@localhost").id)
    assert runtime.anyone_signed_in()


def test_migrations_are_idempotent(runtime):
    from opencave.storage.sql import upgrade_schema

    upgrade_schema(runtime.engine)
    upgrade_schema(runtime.engine)


def _generations(runtime):
    from opencave.storage.sql import reader
    from opencave.storage.state import read_generations

    with reader(runtime.engine).connect() as conn:
        return read_generations(conn)


def _password_works(runtime, password: str) -> bool:
    from opencave.services.auth.passwords import verify_password

    _, stored = runtime.accounts.password_hash("admin@localhost")
    return verify_password(stored, password)
