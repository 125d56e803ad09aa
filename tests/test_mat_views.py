"""The materialize views pages (``/materialize/views/…``) against ``opencave serve``.

Pages are read as an admin (every page; rows, filters and downloads equal the genuine
caveclient's answers), as nobody (sent to the login page), as a user without permission (403),
and with hostile strings in a table's metadata and rows (rendered inert). A headless Chromium
walks the set-up guide's first step: open the datastack page, log in, accept the terms, see the
versions. Each storage engine's shared server gets one extra datastack, ``views_extra``, whose
dataset asks for terms of service and whose one table holds the hostile strings.
"""

from __future__ import annotations

import io
import json
from urllib.parse import quote, unquote

import lxml.html
import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests

from tests.support.http import no_unhandled_errors

from tests.support.materialize import DS, caveclient_for
from tests.support.chromium import headless_chromium

VIEWS = "/materialize/views"
EXTRA = "views_extra"
HOSTILE = [
    "<script>window.pwned = 1</script>",
    "\"'><img src=x onerror=\"window.pwned=2\">",
    "javascript:window.pwned=3",
    "</td></tr></table><script>window.pwned=4</script>",
]
TERMS = "Cite the extra dataset in every publication."


@pytest.fixture(scope="module", autouse=True)
def no_server_errors(server):
    """No request of this module may hit an unhandled error."""
    with no_unhandled_errors(server):
        yield


@pytest.fixture(scope="module")
def admin(admin_token) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin_token}"
    return session


@pytest.fixture(scope="module")
def client(server, admin_token):
    return caveclient_for(server, admin_token)


@pytest.fixture(scope="module")
def extra(server, store, admin_token, client) -> int:
    """``views_extra``: a datastack of its own dataset, under terms of service, with one table of
    hostile strings frozen in a version; answers that version's number."""
    import caveclient

    server.cli("demo", "create", EXTRA, "--no-annotations")
    store.access.create_tos("Extra terms", TERMS, EXTRA)
    own = caveclient.CAVEclient(EXTRA, server_address=server.url, auth_token=admin_token)
    resolution = client.materialize.get_table_metadata("synapses")["voxel_resolution"]
    own.annotation.create_table(
        "hostile", "cell_type_local", HOSTILE[0], voxel_resolution=resolution, notice_text=HOSTILE[1]
    )
    synapses = client.materialize.query_table("synapses", materialization_version=1, limit=len(HOSTILE), split_positions=False)
    rows = pd.DataFrame(
        {
            "pt_position": [list(p) for p in synapses["pre_pt_position"]],
            "cell_type": HOSTILE,
            "classification_system": list(reversed(HOSTILE)),
        }
    )
    own.annotation.post_annotation_df("hostile", rows, position_columns=["pt_position"])
    made = requests.post(
        f"{server.url}/materialize/api/v2/materialize/run/create_frozen/datastack/{EXTRA}",
        json={},
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=120,
    )
    assert made.status_code == 200, made.text
    return made.json()["version"]


def _rows(html: str) -> pd.DataFrame:
    """The rows table of a table page, as text."""
    doc = lxml.html.fromstring(html)
    header = [th.text_content().strip() for th in doc.xpath('//table[@id="rows"]/thead/tr/th')]
    body = [[td.text_content().strip() for td in tr.xpath("td")] for tr in doc.xpath('//table[@id="rows"]/tbody/tr')]
    return pd.DataFrame(body, columns=header)


def _page(session: requests.Session, server, path: str, **params) -> requests.Response:
    response = session.get(server.url + VIEWS + path, params=params, allow_redirects=False)
    assert response.headers["content-type"].startswith("text/html"), (path, response.headers["content-type"])
    return response


@pytest.fixture(scope="module")
def store(server):
    """The server's store opened in this process: users and grants made here take effect at once
    (every write bumps the generation the server checks), without a command's start-up."""
    from opencave.config import resolve_settings
    from opencave.runtime import Runtime

    runtime = Runtime.open(resolve_settings(str(server.data_dir), server.database))
    yield runtime
    runtime.close()


def _user(store, email: str, *, in_default_group: bool = True, password: str | None = None) -> str:
    """A new user (in the ``default`` group, which may view the demo datastacks, unless told
    otherwise) and an API token of theirs."""
    user = store.accounts.create_user(email, None, password=password)
    if not in_default_group:
        store.accounts.remove_member("default", email)
    return store.tokens.create(user.id, description="views test")


# -- every page, as an admin ---------------------------------------------------------------------
def test_index_datastack_and_version_pages(server, admin, client):
    index = _page(admin, server, "/")
    assert index.status_code == 200 and f'href="{VIEWS}/datastack/{DS}"' in index.text

    page = _page(admin, server, f"/datastack/{DS}")
    assert page.status_code == 200
    doc = lxml.html.fromstring(page.text)
    shown = [[td.text_content().strip() for td in tr.xpath("td")] for tr in doc.xpath('//table[@id="versions"]/tbody/tr')]
    expected = sorted(client.materialize.get_versions_metadata(), key=lambda v: v["version"], reverse=True)
    assert [int(row[0]) for row in shown] == [v["version"] for v in expected]
    for row, version in zip(shown, expected):
        assert pd.Timestamp(row[1]) == pd.Timestamp(version["time_stamp"]).tz_localize(None)
        assert row[2] == ("yes" if version["valid"] else "no")
        assert row[3] == ("never" if version["expires_on"] is None else row[3])

    version = _page(admin, server, f"/datastack/{DS}/version/1")
    assert version.status_code == 200
    doc = lxml.html.fromstring(version.text)
    tables = {tr.xpath("td")[0].text_content().strip(): tr.xpath("td") for tr in doc.xpath('//table[@id="tables"]/tbody/tr')}
    for meta in client.materialize.get_tables_metadata(version=1):
        cells = tables[meta["table_name"]]
        assert cells[2].text_content().strip() == meta["schema_type"]
        assert cells[3].text_content().strip() == (meta.get("description") or "")
    counts = {name: len(client.materialize.query_table(name, materialization_version=1)) for name in tables}
    assert {name: int(cells[1].text_content().replace(",", "")) for name, cells in tables.items()} == counts
    views = [tr.xpath("td")[0].text_content().strip() for tr in doc.xpath('//table[@id="views"]/tbody/tr')]
    assert sorted(views) == sorted(client.materialize.get_views(version=1))


def test_table_page_rows_equal_a_client_query(server, admin, client):
    everything = client.materialize.query_table("synapses", materialization_version=2, split_positions=True).sort_values("id")
    first = _page(admin, server, f"/datastack/{DS}/version/2/table/synapses", page_size=10)
    assert first.status_code == 200
    shown = _rows(first.text)
    assert shown["id"].astype(int).tolist() == everything["id"].head(10).tolist()
    assert shown["pre_pt_root_id"].astype(int).tolist() == everything["pre_pt_root_id"].head(10).tolist()
    assert f"{len(everything):,} matching rows" in first.text
    last = -(-len(everything) // 10)
    for page in (3, last):  # later pages start at their first id
        shown = _rows(_page(admin, server, f"/datastack/{DS}/version/2/table/synapses", page=page, page_size=10).text)
        assert shown["id"].astype(int).tolist() == everything["id"].iloc[(page - 1) * 10 : page * 10].tolist()

    root = int(everything["pre_pt_root_id"].value_counts().index[0])
    expected = client.materialize.query_table(
        "synapses", materialization_version=2, filter_equal_dict={"pre_pt_root_id": root}, split_positions=True
    ).sort_values("id")
    assert len(expected) > 7
    third = _page(admin, server, f"/datastack/{DS}/version/2/table/synapses", page=2, page_size=7, **{"f.pre_pt_root_id": str(root)})
    shown = _rows(third.text)
    assert shown["id"].astype(int).tolist() == expected["id"].iloc[7:14].tolist()
    assert f"{len(expected):,} matching rows" in third.text
    assert f"f.pre_pt_root_id={root}" in third.text, "the pager keeps the filters"

    roots = sorted(everything["post_pt_root_id"].unique()[:3].tolist())
    listed = _page(admin, server, f"/datastack/{DS}/version/2/table/synapses", page_size=500, **{"f.post_pt_root_id": ",".join(map(str, roots))})
    expected = client.materialize.query_table(
        "synapses", materialization_version=2, filter_in_dict={"post_pt_root_id": roots}, split_positions=True
    ).sort_values("id")
    assert _rows(listed.text)["id"].astype(int).tolist() == expected["id"].head(500).tolist()

    types = client.materialize.query_table("cell_types", materialization_version=2)
    wanted = str(types["cell_type"].iloc[0])
    page = _page(admin, server, f"/datastack/{DS}/version/2/table/cell_types", **{"f.cell_type": wanted})
    assert sorted(_rows(page.text)["id"].astype(int)) == sorted(types.loc[types["cell_type"] == wanted, "id"])


def test_each_row_links_to_neuroglancer_on_its_roots(server, admin, client):
    info = client.info.get_datastack_info()
    meta = client.materialize.get_table_metadata("synapses")
    page = _page(admin, server, f"/datastack/{DS}/version/1/table/synapses", page_size=5)
    shown = _rows(page.text)
    links = lxml.html.fromstring(page.text).xpath('//table[@id="rows"]//a[@class="ng-link"]/@href')
    assert len(links) == len(shown) == 5
    viewer = [info[f"viewer_resolution_{axis}"] for axis in "xyz"]
    for link, (_, row) in zip(links, shown.iterrows()):
        site, _, fragment = link.partition("/#!")
        assert site == info["viewer_site"].rstrip("/")
        state = json.loads(unquote(fragment))
        segmentation = next(layer for layer in state["layers"] if layer["type"] == "segmentation")
        assert segmentation["segments"] == [row["pre_pt_root_id"], row["post_pt_root_id"]]
        first = [float(row[f"pre_pt_position_{axis}"]) * t / v for axis, t, v in zip("xyz", meta["voxel_resolution"], viewer)]
        assert state["position"] == pytest.approx(first)


@pytest.mark.parametrize("filtered", [False, True])
def test_downloads_equal_query_table(server, admin, client, filtered):
    everything = client.materialize.query_table("synapses", materialization_version=3, split_positions=True)
    params, kwargs = {}, {}
    if filtered:
        root = int(everything["post_pt_root_id"].value_counts().index[0])
        params, kwargs = {"f.post_pt_root_id": str(root)}, {"filter_equal_dict": {"post_pt_root_id": root}}
    expected = client.materialize.query_table("synapses", materialization_version=3, split_positions=True, **kwargs)
    expected = expected.sort_values("id").reset_index(drop=True)
    base = f"{server.url}{VIEWS}/datastack/{DS}/version/3/table/synapses"

    csv = admin.get(base + "/download.csv", params=params)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv.headers["content-disposition"]
    from_csv = pd.read_csv(io.BytesIO(csv.content)).sort_values("id").reset_index(drop=True)

    parquet = admin.get(base + "/download.parquet", params=params)
    assert parquet.status_code == 200
    from_parquet = pq.read_table(io.BytesIO(parquet.content)).to_pandas().sort_values("id").reset_index(drop=True)

    for got in (from_csv, from_parquet):
        assert list(got.columns) == list(expected.columns)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_view_page_and_download_equal_query_view(server, admin, client):
    view = sorted(client.materialize.get_views(version=2))[0]
    expected = client.materialize.query_view(view, materialization_version=2, split_positions=True)
    key = list(expected.columns)[:2]
    expected = expected.sort_values(key).reset_index(drop=True)
    page = _page(admin, server, f"/datastack/{DS}/version/2/view/{view}", page_size=500)
    assert page.status_code == 200 and f"{len(expected):,} matching rows" in page.text
    shown = _rows(page.text)
    assert sorted(map(int, shown[key[0]])) == sorted(expected[key[0]].head(500))
    csv = admin.get(f"{server.url}{VIEWS}/datastack/{DS}/version/2/view/{view}/download.csv")
    got = pd.read_csv(io.BytesIO(csv.content)).sort_values(key).reset_index(drop=True)
    as_values = lambda frame: frame.astype(object).where(frame.notna(), None)  # noqa: E731 - CSV reads nulls as NaN
    pd.testing.assert_frame_equal(as_values(got), as_values(expected), check_dtype=False)


# -- who may see what ------------------------------------------------------------------------------
PAGES = [
    "/",
    f"/datastack/{DS}",
    f"/datastack/{DS}/version/1",
    f"/datastack/{DS}/version/1/table/synapses?page=2",
    f"/datastack/{DS}/version/1/table/synapses/download.csv",
]


def test_anonymous_is_sent_to_login_and_back(server):
    for path in PAGES:
        response = requests.get(server.url + VIEWS + path, allow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/sticky_auth/login?next={quote(VIEWS + path, safe='')}"


def test_user_without_permission_gets_403(server, store):
    token = _user(store, "views-outsider@example.org", in_default_group=False)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    for path in PAGES[1:]:
        response = session.get(server.url + VIEWS + path, allow_redirects=False)
        assert response.status_code == 403, path
        assert response.headers["content-type"].startswith("text/html")
        assert "Missing permission: view" in response.text
    index = session.get(server.url + VIEWS + "/")
    assert index.status_code == 200 and "no-datastacks" in index.text, "the index lists only what the user may view"


def test_terms_not_accepted_lead_to_the_terms_page(server, store, extra):
    token = _user(store, "views-reader@example.org")
    response = requests.get(server.url + f"{VIEWS}/datastack/{EXTRA}", headers={"Authorization": f"Bearer {token}"}, allow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/sticky_auth/api/v1/tos/") and f"redirect={quote(VIEWS + '/datastack/' + EXTRA, safe='')}" in location


def test_bad_input_answers_a_page(server, admin):
    table = f"/datastack/{DS}/version/1/table/synapses"
    cases = [
        (table + "?page_size=501", 422, "page_size"),
        (table + "?page=0", 422, "page"),
        (table + "?page=abc", 422, "page"),
        (table + "?f.no_such_column=1", 400, "no_such_column"),
        (table + "?f.pre_pt_root_id=abc", 400, "not an integer"),
        (table + "?f.valid=maybe", 400, "true or false"),
        (table + "?f.size=big", 400, "not a number"),
        (f"/datastack/{DS}/version/99", 404, "Version 99 not found"),
        (f"/datastack/{DS}/version/1/table/no_such_table", 404, "no_such_table"),
        ("/datastack/no_such_stack", 404, "no_such_stack"),
        (f"/datastack/{DS}/version/abc", 400, "must be an integer"),
        (f"/datastack/{DS}?all=perhaps", 400, "all"),
        (f"/datastack/{DS}/version/1/table/no_such_view".replace("table", "view"), 404, "no_such_view"),
        (f"/datastack/{DS}/version/1/tables/synapses", 422, "kind"),
    ]
    for path, status, words in cases:
        response = _page(admin, server, path)
        assert response.status_code == status, (path, response.status_code, response.text[-500:])
        message = lxml.html.fromstring(response.text).xpath('//*[@id="error-message"]')[0].text_content()
        assert words in message, (path, message)


def test_no_state_change_on_get(server, admin):
    for path in PAGES:
        assert admin.post(server.url + VIEWS + path.split("?")[0]).status_code == 405


# -- hostile strings ------------------------------------------------------------------------------
def test_hostile_strings_render_inert(server, admin, extra):
    version = _page(admin, server, f"/datastack/{EXTRA}/version/{extra}")
    table = _page(admin, server, f"/datastack/{EXTRA}/version/{extra}/table/hostile")
    filtered = _page(admin, server, f"/datastack/{EXTRA}/version/{extra}/table/hostile", **{"f.cell_type": HOSTILE[1]})
    error = _page(admin, server, f"/datastack/{EXTRA}/version/{extra}/table/hostile", **{"f." + HOSTILE[0]: "1"})
    assert error.status_code == 400
    for response in (version, table, filtered, error):
        doc = lxml.html.fromstring(response.text)
        assert not doc.xpath("//script"), "no script element comes from data"
        assert not doc.xpath("//img") and not doc.xpath("//*[@onerror]")
        assert all(not href.strip().lower().startswith("javascript:") for href in doc.xpath("//a/@href"))
    text = lxml.html.fromstring(table.text).text_content()
    for value in HOSTILE:
        assert value in text, "shown as text"
    shown = _rows(table.text)
    assert sorted(shown["cell_type"]) == sorted(HOSTILE)
    assert _rows(filtered.text)["cell_type"].tolist() == [HOSTILE[1]]
    assert HOSTILE[0] in lxml.html.fromstring(version.text).text_content() and HOSTILE[1] in lxml.html.fromstring(version.text).text_content()


# -- the set-up guide's first step in a browser ----------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as instance:
        yield instance


@pytest.mark.browser
def test_first_visit_logs_in_accepts_terms_and_shows_versions(browser, server, store, extra):
    email, password = "views-newcomer@example.org", "newcomer-password"
    _user(store, email, password=password)
    page = browser.new_context().new_page()
    page.goto(f"{server.url}{VIEWS}/datastack/{EXTRA}")
    assert "/sticky_auth/login" in page.url
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login")
    assert "/sticky_auth/api/v1/tos/" in page.url, "a dataset under terms asks for them first"
    assert TERMS in page.inner_text("#tos-text")
    page.click("#accept-tos")
    page.get_by_role("link", name="Continue").click()
    assert page.url == f"{server.url}{VIEWS}/datastack/{EXTRA}"
    versions = page.locator("#versions tbody tr")
    assert versions.count() == 1 and versions.first.locator("td").first.inner_text() == str(extra)
    page.goto(f"{server.url}{VIEWS}/datastack/{EXTRA}/version/{extra}/table/hostile")
    assert page.locator("#rows tbody tr").count() == len(HOSTILE)
    assert page.evaluate("window.pwned") is None, "no hostile string ran"
