"""The bundled Neuroglancer: links built on the server, the static client, and the viewer itself."""

from __future__ import annotations

import importlib.metadata
import io
import json
import re
import socket
from datetime import datetime, timezone
from urllib.parse import unquote

import caveclient
import numpy as np
import pytest
import requests
from PIL import Image

import opencave
from opencave.services.viewer.bundle import ViewerBundle
from opencave.services.viewer.links import neuroglancer_state, neuroglancer_url, viewer_source
from tests.support.demo import demo_world
from tests.test_auth_security import _logged_in
from tests.support.chromium import headless_chromium

INFO = {
    "aligned_volume": {"name": "v", "image_source": "precomputed://http://127.0.0.1:9/volumes/v/image"},
    "segmentation_source": "graphene://http://127.0.0.1:9/segmentation/table/v",
    "local_server": "http://127.0.0.1:9",
    "viewer_resolution_x": 4.0,
    "viewer_resolution_y": 4.0,
    "viewer_resolution_z": 40.0,
}


# -- link builder ------------------------------------------------------------------------------
def test_state_has_image_segmentation_and_points_centred_on_the_first():
    state = neuroglancer_state(INFO, root_ids=[2**63 - 5, 7], points=[(10, 20, 3), (1, 2, 3)])
    image, seg, points = state["layers"]
    assert image == {"type": "image", "source": "precomputed://middleauth+http://127.0.0.1:9/volumes/v/image", "name": "img"}
    assert seg["type"] == "segmentation"
    assert seg["source"] == "graphene://middleauth+http://127.0.0.1:9/segmentation/table/v"
    assert seg["segments"] == [str(2**63 - 5), "7"]  # 64-bit ids as strings, exact
    assert [a["point"] for a in points["annotations"]] == [[10.0, 20.0, 3.0], [1.0, 2.0, 3.0]]
    assert state["position"] == [10.0, 20.0, 3.0]
    assert state["dimensions"] == {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [4e-8, "m"]}


def test_points_in_nanometres_are_converted_to_viewer_voxels():
    state = neuroglancer_state(INFO, points=[(40, 80, 400)], point_resolution=(1, 1, 1))
    assert state["position"] == [10.0, 20.0, 10.0]


def test_without_image_or_points_only_the_segmentation_is_shown():
    info = {**INFO, "aligned_volume": {"image_source": None}}
    state = neuroglancer_state(info, root_ids=[5], version=3)
    assert [layer["type"] for layer in state["layers"]] == ["segmentation"]
    assert state["layers"][0]["name"] == "seg (v3)"
    assert "position" not in state
    stamped = neuroglancer_state(info, timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert stamped["layers"][0]["name"] == "seg (2026-01-02T03:04:05+00:00)"


def test_bad_points_name_what_is_wrong():
    with pytest.raises(ValueError, match="three coordinates"):
        neuroglancer_state(INFO, points=[(1, 2)])
    with pytest.raises(ValueError, match="three coordinates"):
        neuroglancer_state(INFO, points=[(1, 2, 3, 4)])


def test_middleauth_prefix_is_added_once_and_only_to_graphene_urls():
    assert viewer_source("graphene://https://h/segmentation/table/t") == "graphene://middleauth+https://h/segmentation/table/t"
    already = "graphene://middleauth+https://h/segmentation/table/t"
    assert viewer_source(already) == already
    assert viewer_source("precomputed://gs://bucket/image") == "precomputed://gs://bucket/image"
    public = "precomputed://https://other.example.org/image"
    assert viewer_source(public, "https://h") == public, "another site's image is read as it is"
    assert viewer_source("precomputed://https://h/volumes/v/image", "https://h") == "precomputed://middleauth+https://h/volumes/v/image"


def test_url_is_the_state_after_hash_bang_and_round_trips():
    state = neuroglancer_state(INFO, root_ids=[1], points=[(1, 2, 3)])
    url = neuroglancer_url("http://127.0.0.1:9/neuroglancer/", state)
    prefix = "http://127.0.0.1:9/neuroglancer/#!"
    assert url.startswith(prefix)
    fragment = url[len(prefix) :]
    assert " " not in fragment and "#" not in fragment
    assert json.loads(unquote(fragment)) == state
    assert neuroglancer_url("http://127.0.0.1:9/neuroglancer", state) == url


# -- the served client -------------------------------------------------------------------------
def test_static_client_is_served_without_a_token(server):
    for entry in ("/neuroglancer", "/neuroglancer/"):
        assert requests.get(server.url + entry, allow_redirects=False).headers["location"] == "/neuroglancer/v/opencave/"
    app = server.url + "/neuroglancer/v/opencave/"
    index = requests.get(app)
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    scripts = re.findall(r'src="([^"]+\.js)"', index.text)
    assert scripts, index.text
    script = requests.get(app + scripts[-1])
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    wasm_name = next(name for name in ViewerBundle.installed().names if name.endswith(".wasm"))
    wasm = requests.get(app + wasm_name)
    assert wasm.headers["content-type"] == "application/wasm" and wasm.content[:4] == b"\0asm"
    missing = requests.get(app + "nothing.js")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_viewer_file"
    assert requests.get(server.url + "/neuroglancer/v/other/").json()["error"] == "unknown_viewer"
    assert requests.get(app + "..%2Fpyproject.toml").status_code in (404, 422)


def test_credentials_go_to_this_servers_viewer_and_sources_only(server):
    session = _logged_in(server, "credentials@example.org")
    token = session.cookies["middle_auth_token"]
    url = server.url + "/neuroglancer/credentials/opencave"
    ask = {"key": "middleauthapp", "parameters": server.url}
    answer = session.post(url, data=json.dumps(ask), headers={"Origin": server.url, "Content-Type": "text/plain;charset=UTF-8"})
    assert answer.status_code == 200
    assert answer.json() == {
        "generation": 1,
        "credentials": {"tokenType": "Bearer", "accessToken": token, "url": server.url + "/sticky_auth", "appUrls": [server.url]},
    }
    refusals = [
        (session.post(url, data=json.dumps(ask), headers={"Origin": "https://evil.example.org"}), 403, "foreign_viewer"),
        (session.post(url, data=json.dumps({**ask, "parameters": "https://other.example.org"})), 403, "foreign_source"),
        (session.post(url, data=json.dumps({**ask, "parameters": {"a": 1}})), 403, "foreign_source"),
        (session.post(url, data=json.dumps({"key": "gcs", "parameters": None})), 404, "no_credentials"),
        (session.post(url, data=json.dumps({**ask, "invalid": 1})), 401, "invalid_token"),
        (session.post(url, data="{not json"), 400, "bad_credentials_request"),
        (requests.post(url, data=json.dumps(ask)), 401, "no_token"),
    ]
    for response, status, code in refusals:
        assert (response.status_code, response.json()["error"]) == (status, code), response.text
        assert token not in response.text


def test_version_json_and_auth_info(server):
    for path in ("/neuroglancer/version.json", "/neuroglancer//version.json"):
        info = requests.get(server.url + path)
        assert info.status_code == 200 and info.json()["version"] == importlib.metadata.version("neuroglancer")
    assert requests.get(server.url + "/auth_info").json() == {"login_url": server.url + "/sticky_auth"}


def test_bundled_client_takes_middleauth_over_http():
    bundle = ViewerBundle.installed()
    chunks = [bundle.asset(name).content for name in bundle.names if name.endswith(".js")]
    registering = [c for c in chunks if b'="middleauth+";function' in c]
    assert registering and all(b'of["https","http"]' in c for c in registering)


def test_demo_datastack_opens_in_the_bundled_viewer(server, admin_token):
    client = opencave.CAVEclient("opencave_demo", server_address=server.url, auth_token=admin_token)
    assert client.info.viewer_site() == server.url + "/neuroglancer"


@pytest.fixture
def offline(monkeypatch):
    """Name resolution of any host but the loopback fails, as on a machine without internet."""
    resolve = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(f"no internet in this test: {host}")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


def test_build_neuroglancer_url_works_offline(server, admin_token, offline):
    with pytest.raises(requests.ConnectionError):
        requests.get("https://neuroglancer-demo.appspot.com/version.json", timeout=5)
    for module in (caveclient, opencave):
        client = module.CAVEclient("opencave_demo", server_address=server.url, auth_token=admin_token)
        state_id = client.state.upload_state_json(neuroglancer_state(client.info.get_datastack_info(), root_ids=[1]))
        url = client.state.build_neuroglancer_url(state_id)
        assert url == f"{server.url}/neuroglancer/#!middleauth+{server.url}/nglstate/api/v1/{state_id}", module.__name__


def test_viewer_site_is_chosen_by_serve_and_changed_per_datastack(server_factory):
    other = server_factory("sqlite", "--viewer-site", "https://viewer.example.org")
    token = other.new_token()
    info = opencave.CAVEclient("opencave_demo", server_address=other.url, auth_token=token).info
    assert info.viewer_site() == "https://viewer.example.org"
    session = requests.Session()
    session.cookies.set("middle_auth_token", token)
    handed = session.get(other.url + "/sticky_auth/api/v1/authorize", params={"redirect": "https://viewer.example.org/#!x"}, allow_redirects=False)
    assert handed.status_code == 303, "the datastack's viewer site may receive the login's token"

    changed = other.cli("datastack", "update", "opencave_demo", "--viewer-site", "{local_server}/neuroglancer")
    assert "viewer_site = {local_server}/neuroglancer" in changed.stdout
    fresh = opencave.CAVEclient("opencave_demo", server_address=other.url, auth_token=token).info
    assert fresh.viewer_site() == other.url + "/neuroglancer"
    added = other.cli("datastack", "add", "second", "--dataset", "opencave_demo", "--aligned-volume", "opencave_demo")
    assert added.returncode == 0
    second = opencave.CAVEclient("second", server_address=other.url, auth_token=token).info
    assert second.viewer_site() == other.url + "/neuroglancer", "a new datastack gets the bundled viewer"

    for args, message in (
        (("datastack", "update", "nowhere", "--viewer-site", "x"), "Unknown datastack 'nowhere'"),
        (("datastack", "update", "opencave_demo"), "Nothing to change"),
    ):
        refused = other.cli(*args, check=False)
        assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr


# -- the viewer in a browser -------------------------------------------------------------------
# WebGL without a GPU: Debian's Chromium renders through SwiftShader with these flags.


@pytest.fixture(scope="module")
def browser():
    with headless_chromium(webgl=True) as instance:
        yield instance


def _logged_in_page(browser, server, email: str):
    password = "viewer-password"
    server.cli("user", "add", email, "--password", password, check=False)
    context = browser.new_context(viewport={"width": 800, "height": 600})
    page = context.new_page()
    page.goto(server.url + "/sticky_auth/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login")
    return page


def _open_until_meshes_arrive(page, url: str) -> tuple[dict[str, int], list[str]]:
    """Open ``url`` and wait until mesh fragments were fetched and drawn: every response's
    status by URL, and the fragments' URLs."""
    answers: dict[str, int] = {}
    page.on("response", lambda response: answers.__setitem__(response.url, response.status))
    page.goto(url)
    fragments: list[str] = []
    for _ in range(120):  # up to 30 s on a loaded machine
        fragments = [url for url, status in answers.items() if "/graphene_meshes/" in url and url.rsplit("/", 1)[1] != "info"]
        if fragments and all(answers[url] == 200 for url in fragments):
            page.wait_for_timeout(1000)  # the fragments are decoded and drawn
            break
        page.wait_for_timeout(250)
    return answers, fragments


def _canvas_drawn(page) -> float:
    """The share of the first canvas's pixels that are not (nearly) black."""
    pixels = np.asarray(Image.open(io.BytesIO(page.locator("canvas").first.screenshot())).convert("RGB"))
    return float((pixels.max(axis=2) > 40).mean())


@pytest.mark.browser
def test_viewer_loads_segmentation_and_draws_a_roots_mesh(browser, server, admin_token):
    client = opencave.CAVEclient("opencave_demo", server_address=server.url, auth_token=admin_token)
    world = demo_world(server)
    root = int(client.chunkedgraph.get_root_id(world.cells[3]["soma_supervoxel"]))
    state = neuroglancer_state(client.info.get_datastack_info(), root_ids=[root])
    state.update(showDefaultAnnotations=False, showAxisLines=False, layout="3d")  # only meshes are drawn
    page = _logged_in_page(browser, server, "viewer@example.org")
    answers, fragments = _open_until_meshes_arrive(page, neuroglancer_url(client.info.viewer_site(), state))
    assert page.url.startswith(server.url + "/neuroglancer/v/opencave/#!"), "the link's state survives the redirect"
    manifests = [url for url in answers if f"/meshing/api/v1/table/opencave_demo/manifest/{root}:0" in url]
    assert manifests and all(answers[url] == 200 for url in manifests), answers
    assert fragments and all(answers[url] == 200 for url in fragments), "mesh fragments were fetched"
    credentials = [status for url, status in answers.items() if url.endswith("/neuroglancer/credentials/opencave")]
    assert credentials == [200], "the viewer got the login's token without asking the user"

    drawn = _canvas_drawn(page)
    assert drawn > 0.002, f"the 3D view is blank ({drawn:.4%} of pixels drawn)"
    page.context.close()


@pytest.mark.browser
def test_a_table_pages_link_opens_the_viewer_on_the_rows_neurons(browser, server, admin_token):
    """The Neuroglancer link of a row of the materialize views' table page opens the bundled
    viewer, which draws the meshes of the row's neurons."""
    import lxml.html

    client = opencave.CAVEclient("opencave_demo", server_address=server.url, auth_token=admin_token)
    version = client.materialize.most_recent_version()
    row = client.materialize.query_table("synapses", materialization_version=version, limit=1)
    listed = requests.get(
        f"{server.url}/materialize/views/datastack/opencave_demo/version/{version}/table/synapses",
        params={"page_size": 1}, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30,
    )
    assert listed.status_code == 200, listed.text
    link = lxml.html.fromstring(listed.text).xpath('//table[@id="rows"]//a[@class="ng-link"]/@href')[0]
    page = _logged_in_page(browser, server, "table-viewer@example.org")
    answers, fragments = _open_until_meshes_arrive(page, link)
    for root in (int(row["pre_pt_root_id"].iloc[0]), int(row["post_pt_root_id"].iloc[0])):
        assert any(f"/manifest/{root}:0" in url and status == 200 for url, status in answers.items()), f"the mesh of {root} was asked for"
    assert fragments and all(answers[url] == 200 for url in fragments), "mesh fragments were fetched"
    assert _canvas_drawn(page) > 0.002, "the viewer is blank"
    page.context.close()


@pytest.mark.browser
def test_viewer_shows_em_with_the_segmentation_over_it(browser, server, admin_token):
    client = opencave.CAVEclient("opencave_demo", server_address=server.url, auth_token=admin_token)
    world = demo_world(server)
    soma = world.cells[3]["soma_supervoxel"]
    root = int(client.chunkedgraph.get_root_id(soma))
    state = neuroglancer_state(client.info.get_datastack_info(), root_ids=[root], points=[world.viewer_point(soma)])
    state.update(showDefaultAnnotations=False, showAxisLines=False, layout="xy")
    page = _logged_in_page(browser, server, "em-viewer@example.org")
    answers: dict[str, int] = {}
    page.on("response", lambda response: answers.__setitem__(response.url, response.status))
    page.goto(neuroglancer_url(client.info.viewer_site(), state))

    def image_chunks() -> list[str]:
        return [url for url in answers if "/volumes/opencave_demo/image/" in url and not url.endswith("/info")]

    for _ in range(120):  # up to 30 s on a loaded machine
        if image_chunks() and all(answers[url] == 200 for url in image_chunks()):
            page.wait_for_timeout(1500)  # decoded and drawn
            break
        page.wait_for_timeout(250)
    assert image_chunks() and all(answers[url] == 200 for url in image_chunks()), (
        f"EM chunks were read with the login's token: {len(image_chunks())} chunks, "
        f"not 200: {({url: answers[url] for url in image_chunks() if answers[url] != 200})}"
    )
    pixels = np.asarray(Image.open(io.BytesIO(page.locator("canvas").first.screenshot())).convert("RGB")).astype(int)
    spread = pixels.max(axis=2) - pixels.min(axis=2)
    gray = pixels[spread < 10].mean(axis=1)
    assert gray.size > 0.3 * spread.size and gray.std() > 10, "most of the view is textured gray EM"
    assert (spread > 40).mean() > 0.005, "the selected neuron is drawn in colour over it"
    page.context.close()


@pytest.mark.browser
def test_genuine_caveclient_link_opens_the_stored_state(browser, server, admin_token):
    genuine = caveclient.CAVEclient("opencave_demo", server_address=server.url, auth_token=admin_token)
    root = int(genuine.chunkedgraph.get_root_id(demo_world(server).cells[5]["soma_supervoxel"]))
    state_id = genuine.state.upload_state_json(neuroglancer_state(genuine.info.get_datastack_info(), root_ids=[root]))
    page = _logged_in_page(browser, server, "viewer@example.org")
    answers: dict[str, int] = {}
    page.on("response", lambda response: answers.__setitem__(response.url, response.status))
    page.goto(genuine.state.build_neuroglancer_url(state_id))
    manifest = f"/meshing/api/v1/table/opencave_demo/manifest/{root}:0"
    for _ in range(120):
        if any(manifest in url for url in answers):
            break
        page.wait_for_timeout(250)
    assert answers[f"{server.url}/nglstate/api/v1/{state_id}"] == 200, "the state is read with the login's token"
    assert [status for url, status in answers.items() if manifest in url] == [200], "its segment's mesh is asked for"
    page.context.close()


@pytest.mark.browser
def test_viewer_without_login_gets_no_token(browser, server):
    context = browser.new_context()
    page = context.new_page()
    answers: dict[str, int] = {}
    page.on("response", lambda response: answers.__setitem__(response.url, response.status))
    info = {"segmentation_source": f"graphene://{server.url}/segmentation/table/opencave_demo"}
    page.goto(neuroglancer_url(server.url + "/neuroglancer", neuroglancer_state(info, root_ids=[1])))
    for _ in range(80):
        if server.url + "/neuroglancer/credentials/opencave" in answers:
            break
        page.wait_for_timeout(250)
    assert answers[server.url + "/neuroglancer/credentials/opencave"] == 401
    assert not any("/segmentation/api/" in url and status == 200 for url, status in answers.items())
    context.close()
