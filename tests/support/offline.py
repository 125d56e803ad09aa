"""A fixture that forbids every HTTP request a test's code tries to send, and lists them."""

from __future__ import annotations

import pytest
import requests


@pytest.fixture
def no_requests(monkeypatch) -> list[str]:
    """Every request any code tries to send, refused (``ConnectionError``) and recorded."""
    sent: list[str] = []

    def refuse(adapter, request, *args, **kwargs):
        sent.append(f"{request.method} {request.url}")
        raise requests.ConnectionError("the test forbids requests")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse)
    return sent
