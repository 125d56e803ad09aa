"""Headless Chromium (the Debian package) driven by Playwright, for the browser tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

BASE_ARGS = [
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NO_GPU = ["--disable-gpu"]
WEBGL = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # WebGL in software, headless


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    return path


@contextmanager
def headless_chromium(webgl: bool = False) -> Iterator:
    """A launched browser (Playwright ``Browser``), closed after the block; ``webgl`` for pages
    that draw (the viewer), else the GPU is off."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=BASE_ARGS + (WEBGL if webgl else NO_GPU))
        try:
            yield instance
        finally:
            instance.close()
