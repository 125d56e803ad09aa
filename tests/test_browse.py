"""The data browser: datastacks from /, the neuron page at a version or time, search, permissions
and escaping. Partner counts are checked against the client's own query of the synapse table."""

from __future__ import annotations

import html
import re
import uuid
from collections import Counter
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest
import requests

from tests.support.chromium import headless_chromium

from opencave import CAVEclient

DS = "opencave_demo"


class Tables(HTMLParser):
    """The text of each cell of every ``<table id=...>`` of a page, and every link."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = attrs["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._table:
            self._cell = []
        elif tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "td" and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> list[list[str]]:
        return [r for r in self.tables[table] if r]


def _get(server, path: str, token: str | None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(server.url + path, headers=headers, params=params, allow_redirects=False, timeout=60)


@pytest.fixture(scope="module")
def client(server, admin_token) -> CAVEclient:
    return CAVEclient(DS, server_address=server.url, auth_token=admin_token)


@pytest.fixture(scope="module")
def version(client) -> int:
    return max(client.materialize.get_versions())


@pytest.fixture(scope="module")
def busy_root(client, version) -> int:
    """A root with both inputs and outputs at the newest version."""
    connections = client.materialize.query_view("synapse_connections", materialization_version=version)
    outputs = connections.groupby("pre_pt_root_id")["n_synapses"].sum()
    inputs = connections.groupby("post_pt_root_id")["n_synapses"].sum()
    both = outputs.index.intersection(inputs.index)
    return int(outputs[both].idxmax())


def _partners(client, version: int, root: int, own: str, other: str) -> Counter:
    rows = client.materialize.query_table("synapses", filter_equal_dict={own: root}, materialization_version=version)
    return Counter({int(k): int(v) for k, v in rows[other].value_counts().items() if k != 0})


def _ranked(counts: Counter) -> list[tuple[int, int]]:
    """Partners as the page lists them: most synapses first, then by root id; the first 100."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:100]


def test_neuron_page_partner_counts_equal_a_client_query(server, admin_token, client, version, busy_root):
    page = _get(server, f"/browse/{DS}/neuron/{busy_root}", admin_token, version=version)
    assert page.status_code == 200, page.text
    tables = Tables(page.text)
    for table, own, other in (("outputs", "pre_pt_root_id", "post_pt_root_id"), ("inputs", "post_pt_root_id", "pre_pt_root_id")):
        expected = _partners(client, version, busy_root, own, other)
        shown = [(int(row[0]), int(row[1])) for row in tables.rows(table)]
        assert shown == _ranked(expected), "every partner with its count, most synapses first"
        assert f"{sum(expected.values())} synapses with {len(expected)} partners" in page.text
    # the same moment as a timestamp is answered by live queries, with the same partners
    moment = client.materialize.get_timestamp(version).isoformat()
    live = Tables(_get(server, f"/browse/{DS}/neuron/{busy_root}", admin_token, timestamp=moment).text)
    assert live.rows("outputs") == tables.rows("outputs") and live.rows("inputs") == tables.rows("inputs")
    # the newest version is the default
    assert _get(server, f"/browse/{DS}/neuron/{busy_root}", admin_token).text.count(f"version {version} (") >= 1


def test_cell_type_and_nucleus_are_shown(server, admin_token, client, version):
    neurons = client.materialize.query_view("single_neurons", materialization_version=version)
    neuron = neurons[neurons["cell_type"].notna()].iloc[0]
    root, nucleus = int(neuron["pt_root_id"]), int(neuron["id"])
    page = _get(server, f"/browse/{DS}/neuron/{root}", admin_token, version=version)
    tables = Tables(page.text)
    assert [int(r[1]) for r in tables.rows("nucleus")] == [nucleus]
    assert neuron["cell_type"] in re.search(r'<ul id="cell-type">(.*?)</ul>', page.text, re.S).group(1)
    # the links: the API answers about the root, and the viewer with the root selected
    links = re.findall(r'<a (?:id="[^"]+" )?href="([^"]+)"', re.search(r'<ul id="links">(.*?)</ul>', page.text, re.S).group(1))
    viewer_site = client.info.get_datastack_info()["viewer_site"]
    assert links[0].startswith(viewer_site.rstrip("/") + "/#!") and f"&#34;{root}&#34;" in links[0]
    for link in links[1:]:
        assert _get(server, html.unescape(link), admin_token).status_code == 200, link
    # a partner's cell type comes through its nucleus as well
    inputs = client.materialize.query_table("synapses", filter_equal_dict={"post_pt_root_id": root}, materialization_version=version)
    typed_partners = set(inputs["pre_pt_root_id"]) & set(neurons[neurons["cell_type"].notna()]["pt_root_id"])
    cells = {int(r[0]): r[2] for r in tables.rows("inputs")}
    assert typed_partners & set(cells), "the neuron has inputs of a known cell type"
    for partner in typed_partners & set(cells):
        assert cells[partner] == ", ".join(neurons[neurons["pt_root_id"] == partner]["cell_type"])


def test_lineage_svg_has_the_past_roots_after_an_edit(server, admin_token, client):
    epoch = client.chunkedgraph.get_oldest_timestamp()
    old_roots, new_roots = client.chunkedgraph.get_delta_roots(epoch, datetime.now(timezone.utc))
    assert len(new_roots), "the demo world has proofreading edits"
    root = int(new_roots[-1])
    graph = client.chunkedgraph.get_lineage_graph(root)
    parents = {int(link["source"]) for link in graph["links"] if int(link["target"]) == root}
    assert parents, "an edit's new root replaced older roots"
    page = _get(server, f"/browse/{DS}/neuron/{root}", admin_token, timestamp=datetime.now(timezone.utc).isoformat())
    assert page.status_code == 200, page.text
    svg = re.search(r"<svg id=\"lineage\".*?</svg>", page.text, re.S).group(0)
    drawn = {int(x) for x in re.findall(r'data-root-id="(\d+)"', svg)}
    assert parents <= drawn and root in drawn
    for parent in parents:  # a past root links to its own page at the time it was made
        assert re.search(rf'href="/browse/{DS}/neuron/{parent}\?timestamp=[^"]+"', svg)
    old = _get(server, f"/browse/{DS}/neuron/{min(parents)}", admin_token)
    assert old.status_code == 200 and 'id="not-current"' in old.text


def test_search_by_root_nucleus_and_cell_type(server, admin_token, client, version, busy_root):
    found = _get(server, f"/browse/{DS}/search", admin_token, kind="root", q=str(busy_root), version=version)
    assert found.status_code == 303 and found.headers["location"] == f"/browse/{DS}/neuron/{busy_root}?version={version}"

    neurons = client.materialize.query_view("single_neurons", materialization_version=version)
    typed = neurons[neurons["cell_type"].notna()]
    nucleus, root, cell_type = int(typed.iloc[0]["id"]), int(typed.iloc[0]["pt_root_id"]), typed.iloc[0]["cell_type"]
    found = _get(server, f"/browse/{DS}/search", admin_token, kind="nucleus", q=str(nucleus), version=version)
    assert found.status_code == 303 and found.headers["location"] == f"/browse/{DS}/neuron/{root}?version={version}"

    listed: set[int] = set()
    page = 1
    while True:
        answer = _get(server, f"/browse/{DS}/search", admin_token, kind="cell_type", q=cell_type, version=version, page=page)
        assert answer.status_code == 200, answer.text
        listed |= {int(r[0]) for r in Tables(answer.text).rows("results") if r[0].isdigit()}
        if 'rel="next"' not in answer.text:
            break
        page += 1
    expected = client.materialize.query_table("cell_types", filter_equal_dict={"cell_type": cell_type}, materialization_version=version)
    nuclei = client.materialize.query_table("nucleus_detection", filter_in_dict={"id": expected["target_id"].tolist()}, materialization_version=version)
    assert listed == {int(r) for r in nuclei["pt_root_id"] if r != 0}

    for params, status, words in (
        ({"kind": "root", "q": "12ab"}, 400, "root id must be a whole number"),
        ({"kind": "nucleus", "q": "999999999"}, 404, "no nucleus 999999999"),
        ({"kind": "colour", "q": "1"}, 400, "kind must be one of"),
        ({"kind": "root", "q": "1", "version": "99999"}, 404, "99999"),
        ({"kind": "root", "q": "1", "timestamp": "tomorrow-ish"}, 400, "timestamp"),
    ):
        answer = _get(server, f"/browse/{DS}/search", admin_token, **params)
        assert answer.status_code == status, (params, answer.text)
        assert answer.headers["content-type"].startswith("text/html")
        assert words.lower() in answer.text.lower(), answer.text


def test_home_and_datastack_pages(server, admin_token, version):
    home = _get(server, "/", admin_token)
    assert f'href="/browse/{DS}"' in home.text and "/sticky_auth/settings/tokens" in home.text
    page = _get(server, f"/browse/{DS}", admin_token)
    assert page.status_code == 200
    tables = {row[0]: row for row in Tables(page.text).rows("tables")}
    assert tables["synapses"][2] == "synapse" and tables["nucleus_detection"][2] == "nucleus"
    assert tables["cell_types"][2] == "cell type" and tables["proofreading_status"][2] == "proofreading"
    assert f"version {version} (" in page.text and 'id="search-q"' in page.text and '<label for="search-q">' in page.text
    assert "/search?kind=cell_type" in page.text


@pytest.fixture(scope="module")
def store(server):
    """The server's store opened in this process: users, datasets and grants made here take effect
    at once (every write bumps the generation the server checks), without a command's start-up."""
    from opencave.config import resolve_settings
    from opencave.runtime import Runtime

    runtime = Runtime.open(resolve_settings(str(server.data_dir), server.database))
    yield runtime
    runtime.close()


def _user(store, email: str, password: str | None = None) -> str:
    """A new user of the ``default`` group and an API token of theirs."""
    user = store.accounts.create_user(email, None, password=password)
    return store.tokens.create(user.id, description="browser test")


def test_permissions(server, store, admin_token, busy_root):
    anonymous = _get(server, f"/browse/{DS}/neuron/{busy_root}", None)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/sticky_auth/login?next=")
    assert "Log in" in _get(server, "/", None).text

    name = f"private_{uuid.uuid4().hex[:8]}"
    store.access.create_dataset(name)
    store.info.add_datastack(name, DS, local_server=server.url)
    store.access.map_resource("datastack", name, name)
    outsider = _user(store, f"outsider-{uuid.uuid4().hex[:8]}@example.org")
    refused = _get(server, f"/browse/{name}", outsider)
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/html")
    assert "view" in refused.text
    assert _get(server, f"/browse/{name}/neuron/{busy_root}", outsider).status_code == 403
    assert f"/browse/{name}" not in _get(server, "/", outsider).text
    assert _get(server, f"/browse/{name}", admin_token).status_code == 200
    assert _get(server, "/browse/no_such_stack", admin_token).status_code == 404

    # under terms of service: listed on /, and the page leads to the terms first, then back
    store.access.grant("default", name, "view")
    store.access.create_tos(f"Terms of {name}", "Be kind.", name)
    assert f'href="/browse/{name}"' in _get(server, "/", outsider).text
    sent = _get(server, f"/browse/{name}", outsider, version="")
    assert sent.status_code == 303, sent.text
    assert re.fullmatch(r"/sticky_auth/api/v1/tos/\d+/accept\?redirect=%2Fbrowse%2F" + name + r"%3Fversion%3D", sent.headers["location"])


HOSTILE = '<script>alert("x")</script>'


def test_hostile_cell_types_are_escaped(server, admin_token, client, version):
    """Cell types from a table anyone may write reach every page as text, never as markup."""
    neurons = client.materialize.query_view("single_neurons", materialization_version=version)
    # the page is asked about now: a root that other modules' edits on the shared server have
    # since replaced would be a past object there, and the search would find its successor
    neuron = neurons[client.chunkedgraph.is_latest_roots(neurons["pt_root_id"].to_numpy())].iloc[0]
    root = int(neuron["pt_root_id"])
    table = f"hostile_{uuid.uuid4().hex[:8]}"
    client.annotation.create_table(table, "cell_type_local", "cell types with markup", [4, 4, 40])
    nucleus = client.materialize.query_table(
        "nucleus_detection", filter_equal_dict={"id": int(neuron["id"])}, materialization_version=version, split_positions=True, desired_resolution=[4, 4, 40]
    ).iloc[0]
    position = [float(nucleus[f"pt_position_{a}"]) for a in "xyz"]
    client.annotation.post_annotation(
        table, [{"pt": {"position": position}, "cell_type": HOSTILE, "classification_system": '"><img src=x onerror=alert(1)>'}]
    )
    now = datetime.now(timezone.utc).isoformat()
    page = _get(server, f"/browse/{DS}/neuron/{root}", admin_token, timestamp=now)
    assert page.status_code == 200, page.text
    assert HOSTILE not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    search = _get(server, f"/browse/{DS}/search", admin_token, kind="cell_type", q=HOSTILE, table=table, timestamp=now)
    assert search.status_code == 200, search.text
    assert HOSTILE not in search.text and str(root) in search.text


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as instance:
        yield instance


@pytest.mark.browser
def test_a_person_logs_in_searches_by_keyboard_and_reads_partners(browser, server, store, client, version, busy_root):
    email, password = f"reader-{uuid.uuid4().hex[:8]}@example.org", "browse-password"
    _user(store, email, password)
    page = browser.new_context(java_script_enabled=False).new_page()  # the pages need no script
    page.goto(server.url + f"/browse/{DS}")
    assert "/sticky_auth/login" in page.url
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login")
    assert page.url.endswith(f"/browse/{DS}")
    page.select_option("#search-kind", "root")
    page.focus("#search-q")
    page.keyboard.type(str(busy_root))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert f"/browse/{DS}/neuron/{busy_root}?version={version}" in page.url
    shown = [(int(r.locator("td").nth(0).inner_text()), int(r.locator("td").nth(1).inner_text())) for r in page.locator("#outputs tbody tr").all()]
    assert shown == _ranked(_partners(client, version, busy_root, "pre_pt_root_id", "post_pt_root_id"))
