"""ASGI entry point for multi-worker serving: settings come from ``OPENCAVE_*`` variables."""

from __future__ import annotations

import os

from fastapi import FastAPI

from opencave.config import resolve_settings
from opencave.runtime import Runtime
from opencave.server.app import create_app


def create_app_from_env() -> FastAPI:
    settings = resolve_settings(auth_enabled=os.environ.get("OPENCAVE_AUTH", "1") != "0")
    return create_app(Runtime.open(settings))
