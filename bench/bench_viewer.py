"""Bundled Neuroglancer: time from opening a link to the first mesh fragment fetched and drawn
[target < 3 s on loopback].

A logged-in headless Chromium (SwiftShader WebGL) opens a link built by
``services/viewer/links.py`` for one neuron of the demo datastack in the 3D layout, ``--repeat``
times, each in a fresh browser context (nothing cached). For each run: the time to the first mesh
fragment's answer, and the time until the 3D view's canvas has drawn pixels (sampled every 50 ms,
so figures are at most that much late). The first run also pays the server's first mesh of
those L2 nodes when they were never asked for.

Usage: python bench/bench_viewer.py [--data-dir DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import loopback_server, opencave_cli  # noqa: E402
from opencave import CAVEclient  # noqa: E402
from opencave.services.viewer.links import neuroglancer_state, neuroglancer_url  # noqa: E402

ARGS = ["--no-sandbox", "--no-first-run", "--disable-background-networking", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def drawn_fraction(page) -> float:
    pixels = np.asarray(Image.open(io.BytesIO(page.locator("canvas").first.screenshot())).convert("RGB"))
    return float((pixels.max(axis=2) > 40).mean())


def one_run(browser, url: str, link: str, email: str, password: str) -> tuple[float, float]:
    context = browser.new_context(viewport={"width": 800, "height": 600})
    page = context.new_page()
    page.goto(url + "/sticky_auth/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login")
    first_fragment: list[float] = []
    page.on("response", lambda r: first_fragment.append(time.perf_counter()) if "/graphene_meshes//" in r.url and r.ok else None)
    start = time.perf_counter()
    page.goto(link)
    while True:
        if first_fragment and drawn_fraction(page) > 0.002:
            drawn = time.perf_counter()
            break
        if time.perf_counter() - start > 60:
            raise RuntimeError("no mesh drawn within 60 s")
        page.wait_for_timeout(50)
    context.close()
    return first_fragment[0] - start, drawn - start


def main() -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="/tmp/opencave-bench-viewer")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    storage = ["--data-dir", args.data_dir]
    email, password = "bench-viewer@example.org", "bench-viewer-password"
    with loopback_server(storage, wait_s=600) as url:
        opencave_cli("user", "add", email, "--password", password, storage=storage)
        token = opencave_cli("token", "create", "admin@localhost", storage=storage)
        client = CAVEclient("opencave_demo", server_address=url, auth_token=token)
        cells = json.loads((Path(args.data_dir) / "worlds" / "opencave_demo" / "cells.json").read_text())
        root = int(client.chunkedgraph.get_root_id(cells[3]["soma_supervoxel"]))
        state = neuroglancer_state(client.info.get_datastack_info(), root_ids=[root])
        state.update(showDefaultAnnotations=False, showAxisLines=False, layout="3d")
        link = neuroglancer_url(client.info.viewer_site(), state)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=ARGS)
            runs = [one_run(browser, url, link, email, password) for _ in range(args.repeat)]
            browser.close()
    fetched, drawn = zip(*runs)
    print(json.dumps({
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "root": root,
        "first_fragment_s": [round(t, 2) for t in fetched],
        "first_drawn_s": [round(t, 2) for t in drawn],
        "p50_first_fragment_s": round(statistics.median(fetched), 2),
        "p50_first_drawn_s": round(statistics.median(drawn), 2),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
