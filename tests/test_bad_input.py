"""Bad input always gets a clear 4xx JSON answer: never a 500, never a redirect for an API call."""

from __future__ import annotations

import requests

DATASTACKS = "/info/api/v2/datastacks"


def _assert_error(response: requests.Response, status: int, error: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert not response.history, "API calls must never redirect"
    body = response.json()
    assert body["code"] == status
    assert body["error"] == error
    for word in words:
        assert word.lower() in body["message"].lower(), body["message"]
    return body


def test_no_token(server):
    response = requests.get(server.url + DATASTACKS)
    _assert_error(response, 401, "no_token", "No Token Provided", "/sticky_auth/settings/tokens")
    assert response.headers["www-authenticate"].startswith("Bearer realm=")


def test_unknown_token(server):
    response = requests.get(server.url + DATASTACKS, headers={"Authorization": "Bearer " + "0" * 32})
    _assert_error(response, 401, "invalid_token", "Invalid or Expired")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_malformed_token(server):
    for token in ("short", "G" * 32, "0" * 31 + "Z", "0" * 33):
        response = requests.get(server.url + DATASTACKS, headers={"Authorization": f"Bearer {token}"})
        _assert_error(response, 401, "invalid_token", "malformed", "32 lowercase hexadecimal")


def test_authorization_header_must_be_bearer(server, admin_token):
    response = requests.get(server.url + DATASTACKS, headers={"Authorization": f"Token {admin_token}"})
    _assert_error(response, 400, "bad_auth_header", "Bearer")


def test_token_as_cookie_and_query_parameter(server, admin_token):
    assert "opencave_demo" in requests.get(server.url + DATASTACKS, cookies={"middle_auth_token": admin_token}).json()
    assert "opencave_demo" in requests.get(server.url + DATASTACKS, params={"middle_auth_token": admin_token}).json()


def test_browser_without_token_is_not_redirected_on_api_call(server):
    response = requests.get(server.url + DATASTACKS, headers={"Accept": "text/html"}, allow_redirects=False)
    _assert_error(response, 401, "no_token")


def test_unknown_datastack(server, admin_token):
    response = requests.get(
        server.url + "/info/api/v2/datastack/full/no_such_stack", headers={"Authorization": f"Bearer {admin_token}"}
    )
    _assert_error(response, 404, "unknown_datastack", "no_such_stack", "get_datastacks")


def test_dataset_without_permission(server, admin_token):
    server.cli("dataset", "add", "private_ds")
    server.cli("user", "add", "outsider@example.org")
    outsider = server.new_token("outsider@example.org")
    _register_datastack(server, "private_stack", "private_ds")
    headers = {"Authorization": f"Bearer {outsider}"}
    response = requests.get(server.url + "/info/api/v2/datastack/full/private_stack", headers=headers)
    body = _assert_error(response, 403, "missing_permission", "view", "private_ds")
    assert body["data"] == {"required_permission": "view", "auth_dataset": "private_ds"}
    assert "private_stack" not in requests.get(server.url + DATASTACKS, headers=headers).json()
    admin = {"Authorization": f"Bearer {admin_token}"}
    assert requests.get(server.url + "/info/api/v2/datastack/full/private_stack", headers=admin).status_code == 200


def _register_datastack(server, name: str, dataset: str) -> None:
    """Register a datastack through the store (the info registry), as an operator would."""
    from opencave.config import resolve_settings
    from opencave.runtime import Runtime

    runtime = Runtime.open(resolve_settings(str(server.data_dir), server.database))
    try:
        if name not in runtime.info.datastack_names():
            runtime.info.add_datastack(name, "opencave_demo", local_server=server.url)
            runtime.access.map_resource("datastack", name, dataset)
    finally:
        runtime.close()


def test_malformed_json_body(server, admin_token):
    response = requests.post(
        server.url + "/auth/api/v1/user/token",
        data="{not json",
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
    )
    _assert_error(response, 400, "invalid_json", "not valid JSON")


def test_wrongly_typed_json_body(server, admin_token):
    response = requests.post(
        server.url + "/auth/api/v1/user/token", json={"description": ["a", "list"]}, headers={"Authorization": f"Bearer {admin_token}"}
    )
    _assert_error(response, 422, "invalid_request", "description")


def test_oversized_json_body(server, admin_token):
    response = requests.post(
        server.url + "/auth/api/v1/user/token",
        json={"description": "x" * 200_000},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    _assert_error(response, 413, "payload_too_large", "limit")


def test_oversized_chunked_body(server, admin_token):
    def chunks():
        for _ in range(100):
            yield b"x" * 10_000

    response = requests.post(
        server.url + "/auth/api/v1/user/token", data=chunks(), headers={"Authorization": f"Bearer {admin_token}"}
    )
    _assert_error(response, 413, "payload_too_large")


def test_unknown_endpoint_and_method(server, admin_token):
    headers = {"Authorization": f"Bearer {admin_token}"}
    _assert_error(requests.get(server.url + "/info/api/v2/nothing_here", headers=headers), 404, "not_found", "No endpoint")
    _assert_error(requests.delete(server.url + DATASTACKS, headers=headers), 405, "method_not_allowed", "DELETE")


def test_bad_query_values(server, admin_token):
    headers = {"Authorization": f"Bearer {admin_token}"}
    _assert_error(requests.get(server.url + "/auth/api/v1/user", params={"id": "1,x"}, headers=headers), 400, "invalid_ids", "integers")
    response = requests.get(server.url + "/info/api/v2/aligned_volume/id/abc", headers=headers)
    _assert_error(response, 400, "bad_id", "aligned_volume_id")


def test_pending_services_answer_501_json(server, admin_token):
    # the watershed (ws) and the EM image are served; other layers of a volume are not
    response = requests.get(server.url + "/volumes/opencave_demo/synapse_cleft/info", headers={"Authorization": f"Bearer {admin_token}"})
    _assert_error(response, 501, "service_not_available", "volume service")
