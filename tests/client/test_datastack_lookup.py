"""The datastack -> server cache file."""

from __future__ import annotations

import logging

from opencave.client import datastack_lookup as lookup

from .helpers import GLOBAL, SERVER, read_json, write_json

CACHE = "cave_datastack_to_server_map.json"


def test_missing_or_broken_cache_reads_empty(secrets):
    assert lookup.read_map() == {}
    secrets.mkdir(parents=True)
    (secrets / CACHE).write_text("{broken")
    assert lookup.read_map() == {}  # caveclient's behaviour: the cache is only a convenience
    (secrets / CACHE).write_text("[1, 2]")
    assert lookup.get_datastack_cache() == {}


def test_handle_server_address_writes_and_reads(secrets, caplog):
    with caplog.at_level(logging.WARNING):
        assert lookup.handle_server_address("ds", SERVER, write=True) == SERVER
    assert read_json(secrets / CACHE) == {"ds": SERVER}
    assert f"'{SERVER}' will now be used by default for datastack 'ds'" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        lookup.handle_server_address("ds", SERVER, write=True)  # unchanged: no write, no log
        lookup.handle_server_address("ds2", GLOBAL, write=True, do_log=False)
    assert caplog.text == ""
    assert lookup.handle_server_address("ds", None) == SERVER
    assert lookup.handle_server_address("unknown", None) is None
    assert lookup.handle_server_address(None, None) is None


def test_without_write_nothing_is_stored(secrets):
    assert lookup.handle_server_address("ds", SERVER) == SERVER
    assert not (secrets / CACHE).exists()


def test_record_datastacks_and_reset(secrets, caplog):
    write_json(secrets / CACHE, {"keep": GLOBAL})
    assert lookup.record_datastacks(["a", "b"], SERVER)
    assert read_json(secrets / CACHE) == {"keep": GLOBAL, "a": SERVER, "b": SERVER}
    with caplog.at_level(logging.WARNING):
        lookup.reset_server_address_cache(["a", "missing"])
        lookup.reset_server_address_cache("b")
    assert read_json(secrets / CACHE) == {"keep": GLOBAL}
    assert "Wiping 'a' from datastack-to-server cache" in caplog.text


def test_is_writable_does_not_create_the_file(secrets):
    assert lookup.is_writable()
    assert secrets.is_dir()
    assert not (secrets / CACHE).exists()


def test_custom_filename(tmp_path):
    path = tmp_path / "sub" / "map.json"
    assert lookup.write_map({"x": SERVER}, str(path))
    assert lookup.read_map(str(path)) == {"x": SERVER}
