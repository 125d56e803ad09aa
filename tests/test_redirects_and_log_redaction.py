"""Redirect targets are resolved as browsers resolve them; tokens never reach a log line."""

from __future__ import annotations

import logging

import pytest

from opencave.server.log_redaction import REDACTED, RedactTokens, redact, redacted_logging
from opencave.server.web.redirects import allowed_origins, origin_of, resolve, with_params

SERVER = "http://127.0.0.1:8765"
ORIGINS = allowed_origins(SERVER, ["https://viewer.example.org"], ["https://neuroglancer-demo.appspot.com/", "not a url", ""])
TOKEN = "0123456789abcdef0123456789abcdef"


def test_allowed_origins_are_normalized_and_deduplicated():
    assert ORIGINS == ["http://127.0.0.1:8765", "https://viewer.example.org", "https://neuroglancer-demo.appspot.com"]
    assert origin_of("HTTPS://Viewer.Example.org:443/path?q") == "https://viewer.example.org"
    assert origin_of("javascript:alert(1)") is None and origin_of("ng.example.org") is None


@pytest.mark.parametrize(
    "target",
    [
        "///other.host/x",
        "//other.host/x",
        "/\\other.host/x",
        "\\\\other.host/x",
        "\\/other.host/x",
        "https:other.host/x",
        "/\t/other.host/x",
        "/\n/other.host/x",
        "\t//other.host",
        " //other.host",
        "http://127.0.0.1:8765@other.host/",
        "http://127.0.0.1:8765%40other.host/",
        "http://user:pass@127.0.0.1:8765/x",
        "http://user@127.0.0.1:8765/x",
        "https://127.0.0.1:8765/x",  # another scheme is another origin
        "http://127.0.0.1:8766/x",
        "http://ｏｔｈｅｒ.host/",  # full-width letters: IDN mapping makes this other.host
        "http://xn--e1afmkfd.xn--p1ai/",
        "https://viewer.example.org.other.host/",
        "https://viewer.example.org@other.host/",
        "javascript:alert(document.cookie)",
        "JaVaScRiPt:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "http://[::1]/",
    ],
)
def test_off_origin_forms_are_refused(target):
    resolved = resolve(target, SERVER + "/", ORIGINS)
    assert resolved is None, f"{target!r} resolved to {resolved.href if resolved else None}"


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/sticky_auth/settings/tokens", SERVER + "/sticky_auth/settings/tokens"),
        ("/%2F%2Fother.host/x", SERVER + "/%2F%2Fother.host/x"),  # encoded slashes stay a path here
        ("/%5Cother.host", SERVER + "/%5Cother.host"),
        ("page?x=1#part", SERVER + "/page?x=1#part"),
        ("HTTP://127.0.0.1:8765/x", SERVER + "/x"),
        ("http:/\\/127.0.0.1:8765/x", SERVER + "/x"),
        ("http:other.host", SERVER + "/other.host"),  # same scheme as the base: a relative path
        ("http://0x7f000001:8765/x", SERVER + "/x"),  # hexadecimal IPv4, read as browsers read it
        ("https://viewer.example.org/#!{}", "https://viewer.example.org/#!{}"),
        ("https://neuroglancer-demo.appspot.com/", "https://neuroglancer-demo.appspot.com/"),
    ],
)
def test_allowed_targets_resolve_to_their_serialization(target, expected):
    resolved = resolve(target, SERVER + "/", ORIGINS)
    assert resolved is not None and resolved.href == expected


def test_token_parameters_go_before_the_fragment():
    resolved = resolve("/page?x=1#part", SERVER + "/", ORIGINS)
    assert with_params(resolved, {"middle_auth_token": TOKEN}) == f"{SERVER}/page?x=1&middle_auth_token={TOKEN}#part"


@pytest.mark.parametrize(
    "line",
    [
        f'127.0.0.1:5000 - "GET /info/api/v2/datastacks?middle_auth_token={TOKEN} HTTP/1.1" 200',
        f"GET /x?a=1&token={TOKEN}&b=2",
        f"Authorization: Bearer {TOKEN}",
        f"cookie: middle_auth_token={TOKEN}; other=1",
        f"GET /x?%6Diddle_auth_token={TOKEN.upper()}",
        f"failed for {TOKEN}",
    ],
)
def test_redact_removes_every_token_shape(line):
    cleaned = redact(line)
    assert TOKEN not in cleaned.lower() and REDACTED in cleaned


def test_the_filter_keeps_uvicorns_access_arguments_usable(capsys):
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/x?middle_auth_token={TOKEN}", "1.1", 200), None,
    )
    assert RedactTokens().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(record)
    assert line == f'127.0.0.1:5000 - "GET /x?middle_auth_token={REDACTED} HTTP/1.1" 200 OK'


def test_tracebacks_are_redacted():
    try:
        raise ValueError(f"bad request /x?middle_auth_token={TOKEN}")
    except ValueError:
        record = logging.getLogger("opencave.test").makeRecord("opencave.test", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info())
    RedactTokens().filter(record)
    assert TOKEN not in logging.Formatter().format(record)


def test_the_logging_configuration_filters_every_handler_and_the_root_logger():
    config = redacted_logging()
    assert all(handler["filters"] == ["redact_tokens"] for handler in config["handlers"].values())
    assert config["root"]["handlers"] == ["default"]
