"""Shared client machinery: error messages, redirects, headers, API and server versions, gating."""

from __future__ import annotations

import json
import logging

import pytest
import requests
import responses
from packaging.version import Version

from opencave.client.auth import AuthClient
from opencave.client.base import (
    ClientBase,
    check_version_compatibility,
    handle_response,
    negotiate_api_version,
    raise_for_status,
)
from opencave.client.errors import AuthException, ServerIncompatibilityError
from opencave.client.info import InfoServiceClient
from opencave.client.schema import SchemaClient
from opencave.wire.endpoints import INFO, SCHEMA

from .helpers import SERVER, TOKEN, mock_info_service

URL = f"{SERVER}/thing"


def _get(rsps, **kwargs) -> requests.Response:
    rsps.add(responses.GET, URL, **kwargs)
    return requests.get(URL)


# ----------------------------------------------------------------------------------------------
# raise_for_status / handle_response


def test_client_error_message(rsps):
    response = _get(rsps, status=400, json="bad things")
    with pytest.raises(requests.HTTPError) as info:
        raise_for_status(response)
    assert str(info.value) == f"400 Client Error: Bad Request for url: {URL} content: b'\"bad things\"'"
    assert info.value.response is response


def test_server_error_uses_json_message(rsps):
    response = _get(rsps, status=500, json={"code": 500, "message": "database is down"})
    with pytest.raises(requests.HTTPError) as info:
        raise_for_status(response)
    assert str(info.value) == (f"500 Server Error: database is down for url: {URL} content:{response.content}")


@pytest.mark.parametrize("body", [b"plain text", b'"a json string"', b"[1, 2]"])
def test_server_error_without_json_object_keeps_reason(rsps, body):
    response = _get(rsps, status=500, body=body)
    with pytest.raises(requests.HTTPError, match=r"^500 Server Error: Internal Server Error for url"):
        raise_for_status(response)


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_missing_terms_of_service_opens_the_form(rsps, browser, content_type):
    body = {"error": "missing_tos", "message": "accept the terms", "data": {"tos_form_url": "https://tos.example/1"}}
    response = _get(rsps, status=403, body=json.dumps(body), content_type=content_type)
    with pytest.raises(requests.HTTPError, match="403 Client Error: Forbidden"):
        raise_for_status(response)
    assert browser == ["https://tos.example/1"]


def test_other_403_opens_nothing(rsps, browser):
    response = _get(rsps, status=403, json={"error": "missing_permission", "message": "no"})
    with pytest.raises(requests.HTTPError):
        raise_for_status(response)
    assert browser == []


def test_warning_header_is_logged(rsps, caplog):
    response = _get(rsps, json=[1], headers={"Warning": "table is deprecated"})
    with caplog.at_level(logging.WARNING):
        assert handle_response(response) == [1]
    assert "table is deprecated" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        handle_response(response, log_warning=False)
    assert caplog.text == ""


def test_handle_response_without_json(rsps):
    response = _get(rsps, body=b"raw")
    assert handle_response(response, as_json=False) is response


def test_redirect_raises_auth_exception(rsps):
    rsps.add(responses.GET, URL, status=302, headers={"Location": f"{SERVER}/login"})
    rsps.add(responses.GET, f"{SERVER}/login", body="<html>login</html>")
    response = requests.get(URL)
    with pytest.raises(AuthException) as info:
        handle_response(response)
    message = str(info.value)
    assert URL in message
    assert f'client=CAVEclient(server_address="{SERVER}")' in message


# ----------------------------------------------------------------------------------------------
# Sessions, headers, cookies, server versions


def test_token_goes_in_header_and_cookie(rsps):
    mock_info_service(rsps)
    info = InfoServiceClient(SERVER, auth_client=AuthClient(token=TOKEN, server_address=SERVER))
    assert info.session.headers["Authorization"] == f"Bearer {TOKEN}"
    assert info.session.cookies.get("middle_auth_token") == TOKEN
    info.get_datastacks()
    request = rsps.calls[-1].request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert f"middle_auth_token={TOKEN}" in request.headers["Cookie"]


def test_no_token_no_header_no_cookie(rsps):
    mock_info_service(rsps)
    info = InfoServiceClient(SERVER, auth_client=AuthClient(server_address=SERVER))
    info.get_datastacks()
    request = rsps.calls[-1].request
    assert "Authorization" not in request.headers
    assert "Cookie" not in request.headers


def test_server_version(rsps):
    mock_info_service(rsps, version="4.30.1")
    assert InfoServiceClient(SERVER).server_version == Version("4.30.1")


def test_server_version_404_is_none(rsps):
    mock_info_service(rsps, version=None)
    assert InfoServiceClient(SERVER).server_version is None


def test_server_version_error_fails_construction(rsps):
    rsps.add(responses.GET, f"{SERVER}/info/version", status=500, json={"message": "boom"})
    with pytest.raises(requests.HTTPError, match="500 Server Error: boom"):
        InfoServiceClient(SERVER)


def test_default_url_mapping_is_a_copy(rsps):
    mock_info_service(rsps)
    info = InfoServiceClient(SERVER, datastack_name=None)
    mapping = info.default_url_mapping
    mapping["i_server_address"] = "elsewhere"
    assert info.default_url_mapping == {"i_server_address": SERVER, "datastack_name": None}


# ----------------------------------------------------------------------------------------------
# API version negotiation


def test_negotiation_takes_newest_common_version(rsps):
    rsps.add(responses.GET, f"{SERVER}/schema/versions", json=[1])
    endpoints, version = negotiate_api_version("latest", SCHEMA, SERVER, {})
    assert version == 1
    assert endpoints["schema"] == "{emas_server_address}/schema/type"
    probe = rsps.calls[0].request
    assert "Cookie" not in probe.headers


def test_negotiation_falls_back_when_server_cannot_say(rsps):
    rsps.add(responses.GET, f"{SERVER}/schema/versions", status=404)
    assert negotiate_api_version("latest", SCHEMA, SERVER, {})[1] == 2
    assert negotiate_api_version("latest", SCHEMA, SERVER, {}, fallback_version=1)[1] == 1


def test_negotiation_connection_error_falls_back(rsps):
    assert negotiate_api_version("latest", SCHEMA, SERVER, {})[1] == 2  # nothing registered


def test_negotiation_without_common_version(rsps):
    rsps.add(responses.GET, f"{SERVER}/schema/versions", json=[7, 8])
    with pytest.raises(ServerIncompatibilityError, match=r"offers API versions \[7, 8\]"):
        negotiate_api_version("latest", SCHEMA, SERVER, {})


def test_explicit_api_version(rsps):
    assert negotiate_api_version(1, SCHEMA, SERVER, {})[1] == 1
    with pytest.raises(ValueError, match="No corresponding API version"):
        negotiate_api_version(5, SCHEMA, SERVER, {})
    assert len(rsps.calls) == 0


def test_info_does_not_probe(rsps):
    mock_info_service(rsps)
    info = InfoServiceClient(SERVER)
    assert info.api_version == 2
    assert [c.request.url for c in rsps.calls] == [f"{SERVER}/info/version"]
    _, version = negotiate_api_version("latest", INFO, SERVER, {}, probe=False)
    assert version == 2


def test_schema_client_probes_with_token(rsps):
    rsps.add(responses.GET, f"{SERVER}/schema/versions", json=[1, 2])
    schema = SchemaClient(SERVER, auth_client=AuthClient(token=TOKEN, server_address=SERVER))
    assert schema.api_version == 2
    assert schema.server_version is None
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


# ----------------------------------------------------------------------------------------------
# Version gating


class Gated:
    def __init__(self, server_version: str | None, api_version: int = 2):
        self.server_version = None if server_version is None else Version(server_version)
        self.api_version = api_version

    @check_version_compatibility(method_constraint=">=4.3.1")
    def new_method(self):
        return "ran"

    @check_version_compatibility(method_constraint=["<3,>=2.18.0", "<4,>=3.0.5"])
    def either(self):
        return "ran"

    @check_version_compatibility(kwarg_use_constraints={"mirror": ">=4.3.1", "other": ">=9"})
    def with_kwarg(self, name=None, mirror=None, other=None, **kwargs):
        return "ran"

    @check_version_compatibility(method_api_constraint=">=3")
    def api3(self):
        return "ran"

    @check_version_compatibility(kwarg_use_api_constraints={"regex": ">=3"})
    def api_kwarg(self, regex=None):
        return "ran"

    @check_version_compatibility(method_constraint=">=5.13.0", method_constraint_message="Upgrade the server.")
    def custom(self):
        return "ran"

    @check_version_compatibility(kwarg_use_constraints={"extra": ">=2"})
    def var_kwargs(self, **kwargs):
        return "ran"


def test_method_constraint():
    assert Gated("4.3.1").new_method() == "ran"
    with pytest.raises(ServerIncompatibilityError) as info:
        Gated("4.3.0").new_method()
    assert str(info.value) == (
        "Use of method `new_method` is only permitted for server version >=4.3.1. Your\n"
        "server version is 4.3.0. Contact your system administrator to update the server\n"
        "version."
    )


def test_unknown_server_version_fails_every_constraint():
    with pytest.raises(ServerIncompatibilityError, match="Your\nserver version is None"):
        Gated(None).new_method()


def test_constraint_list_is_or():
    assert Gated("2.18.3").either() == "ran"
    assert Gated("3.0.5").either() == "ran"
    with pytest.raises(ServerIncompatibilityError) as info:
        Gated("3.0.4").either()
    assert "<3,>=2.18.0 or <4,>=3.0.5" in str(info.value).replace("\n", " ")


def test_kwarg_constraints_apply_only_when_passed():
    old = Gated("4.0.0")
    assert old.with_kwarg() == "ran"
    assert old.with_kwarg(mirror=None) == "ran"
    with pytest.raises(ServerIncompatibilityError) as info:
        old.with_kwarg(mirror="m")
    assert str(info.value).replace("\n", " ") == (
        "Use of keyword argument `mirror` in `with_kwarg` is only permitted for server version "
        ">=4.3.1. Your server version is 4.0.0. Contact your system administrator to update the "
        "server version."
    )
    with pytest.raises(ServerIncompatibilityError, match="`mirror`"):
        old.with_kwarg("name", "m")  # positional counts too
    assert Gated("4.3.1").with_kwarg(mirror="m") == "ran"
    with pytest.raises(ServerIncompatibilityError, match="`extra`"):
        Gated("1.0").var_kwargs(extra=1)


def test_api_constraints():
    assert Gated("1.0", api_version=3).api3() == "ran"
    with pytest.raises(ServerIncompatibilityError) as info:
        Gated("1.0", api_version=2).api3()
    assert str(info.value).replace("\n", " ") == (
        "Use of method `api3` is only permitted for API version >=3. Your API version is 2. "
        "Contact your system administrator to update the API version."
    )
    assert Gated("1.0", api_version=2).api_kwarg() == "ran"
    with pytest.raises(ServerIncompatibilityError, match="keyword argument `regex`"):
        Gated("1.0", api_version=2).api_kwarg(regex="x")


def test_custom_message_and_metadata():
    with pytest.raises(ServerIncompatibilityError, match="^Upgrade the server.$"):
        Gated("5.0").custom()
    assert Gated.new_method.__name__ == "new_method"


def test_raise_for_status_is_a_static_method(rsps):
    response = _get(rsps, status=404)
    with pytest.raises(requests.HTTPError, match="404 Client Error"):
        ClientBase.raise_for_status(response)
