"""``client.schema``."""

from __future__ import annotations

import logging

import pytest
import requests
import responses

from opencave import CAVEclient

from .helpers import SERVER, TOKEN

V2 = f"{SERVER}/schema/api/v2"
SYNAPSE = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {"SynapseSchema": {}},
    "$ref": "#/definitions/SynapseSchema",
}


@pytest.fixture
def schema(rsps):
    rsps.add(responses.GET, f"{SERVER}/schema/versions", json=[1, 2])
    return CAVEclient(server_address=SERVER, auth_token=TOKEN).schema


def test_schema_calls(schema, rsps):
    rsps.add(responses.GET, f"{V2}/type", json=["synapse", "cell_type_local"])
    rsps.add(responses.GET, f"{V2}/type/synapse", json=SYNAPSE)
    rsps.add(responses.POST, f"{V2}/types", json={"synapse": SYNAPSE})
    rsps.add(responses.GET, f"{V2}/types_all", json={"synapse": SYNAPSE})

    assert schema.get_schemas() == ["synapse", "cell_type_local"]
    assert schema.schema_definition("synapse") == SYNAPSE
    assert schema.schema_definition_multi(["synapse", "cell_type_local"]) == {"synapse": SYNAPSE}
    multi = rsps.calls[-1].request
    assert multi.method == "POST"
    assert multi.url == f"{V2}/types?schema_names=synapse%2Ccell_type_local"
    assert multi.body is None
    assert schema.schema_definition_all() == {"synapse": SYNAPSE}


def test_missing_endpoints_warn_and_return_none(schema, rsps, caplog):
    rsps.add(responses.POST, f"{V2}/types", status=404)
    rsps.add(responses.GET, f"{V2}/types_all", status=404)
    with caplog.at_level(logging.WARNING):
        assert schema.schema_definition_multi(["a"]) is None
        assert schema.schema_definition_all() is None
    assert 'see "schema_definition_multi"' in caplog.text
    assert 'see "schema_definition_all"' in caplog.text


def test_errors_raise(schema, rsps):
    rsps.add(responses.GET, f"{V2}/type/nope", status=404, json={"message": "unknown schema"})
    with pytest.raises(requests.HTTPError, match="404 Client Error"):
        schema.schema_definition("nope")


def test_api_v1(rsps):
    rsps.add(responses.GET, f"{SERVER}/schema/versions", json=[1])
    rsps.add(responses.GET, f"{SERVER}/schema/type", json=["synapse"])
    schema = CAVEclient(server_address=SERVER).schema
    assert schema.api_version == 1
    assert schema.get_schemas() == ["synapse"]
    assert schema.schema_definition_all() is None  # no such endpoint in v1
