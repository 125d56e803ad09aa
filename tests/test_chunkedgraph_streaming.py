"""Chunkedgraph JSON answers are encoded a slice at a time: the text equals what encoding the
whole answer at once gives, big answers stream, and encoding 5 million ids needs a few MB."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
import requests

from opencave.wire.json_chunks import CHUNK_VALUES, FLUSH_CHARS, json_chunks
from tests.support.demo import demo_world

T = "/segmentation/api/v1/table/opencave_demo"


def _whole(value, as_str: bool = False):
    """The answer made plain in one go (arrays as nested lists, numpy ids as ints or strings)."""
    if isinstance(value, np.ndarray):
        return value.astype(str).tolist() if as_str and value.dtype.kind in "ui" else value.tolist()
    if isinstance(value, np.integer):
        return str(int(value)) if as_str else int(value)
    if isinstance(value, (np.floating, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _whole(v, as_str) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_whole(v, as_str) for v in value]
    return value


def _text(value, as_str: bool = False) -> bytes:
    return b"".join(json_chunks(value, as_str))


def _expected(value, as_str: bool = False) -> bytes:
    return (json.dumps(_whole(value, as_str), separators=(",", ":")) + "\n").encode()


BIG = CHUNK_VALUES * 2 + 17  # spans several slices, the last one partial
IDS = (np.arange(BIG, dtype=np.uint64) * np.uint64(7919)) | np.uint64(0xFF << 56)  # ids above 2**63

VALUES = {
    "uint64": IDS,
    "uint64 max": np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64),
    "int64": np.arange(-BIG // 2, BIG // 2, dtype=np.int64),
    "uint32": np.arange(100, dtype=np.uint32),
    "float64": np.linspace(-1e-7, 1e300, BIG),
    "float32": np.linspace(0, 1, 1000, dtype=np.float32),
    "non-finite": np.array([np.nan, np.inf, -np.inf, 0.1, -0.0]),
    "bool": np.arange(BIG) % 3 == 0,
    "empty": np.zeros(0, dtype=np.uint64),
    "empty pairs": np.zeros((0, 2), dtype=np.uint64),
    "pairs": IDS[: BIG - 1].reshape(-1, 2),
    "wide rows": np.arange(3 * CHUNK_VALUES * 2, dtype=np.uint64).reshape(2, 3, -1),
    "scalar array": np.array(5, dtype=np.uint64),
    "numpy scalars": {"root_id": np.uint64(2**64 - 1), "area": np.float32(1.5), "ok": np.bool_(True), "n": np.int64(-3)},
    "nested": {
        "leaves_many": {np.uint64(2**63 + 5): IDS[:10], 7: np.zeros(0, np.uint64)},
        "subgraph": {"nodes": IDS[:20].reshape(-1, 2), "affinities": np.linspace(0, 1, 10), "areas": np.arange(10, dtype=np.uint64)},
        "list of dicts": [{"id": np.uint64(3), "t": 1.5, "who": "ann", "none": None}, {"ids": [np.uint64(4), 5, "x"]}],
        "tuple": (IDS[:3], [IDS[3:5]]),
        "long list": [np.uint64(i) for i in range(BIG)],
        "empty": {"list": [], "dict": {}},
    },
    "plain": {"iso": "2025-01-01 00:00:00+00:00", "queued": True, "ratio": 0.25, "text": 'quote " and é'},
}


@pytest.mark.parametrize("as_str", [False, True], ids=["ints", "int64_as_str"])
@pytest.mark.parametrize("name", list(VALUES))
def test_text_equals_encoding_the_whole_answer(name, as_str):
    value = VALUES[name]
    text = _text(value, as_str)
    assert text == _expected(value, as_str)
    assert text.endswith(b"\n") and text.count(b"\n") == 1


def test_ids_above_two_to_the_63_stay_exact_integers():
    parsed = json.loads(_text({"leaf_ids": IDS}))["leaf_ids"]
    assert parsed == [int(i) for i in IDS] and max(parsed) > 2**63
    as_str = json.loads(_text({"leaf_ids": IDS}, as_str=True))["leaf_ids"]
    assert as_str == [str(i) for i in parsed]


def test_int64_as_str_keeps_the_shape_and_leaves_floats_and_flags_alone():
    answer = {"nodes": np.array([[1, 2], [3, 4]], np.uint64), "affinities": np.array([0.5, 1.0]), "is_latest": np.array([True, False])}
    assert json.loads(_text(answer, as_str=True)) == {"nodes": [["1", "2"], ["3", "4"]], "affinities": [0.5, 1.0], "is_latest": [True, False]}


def test_non_finite_floats_are_written_as_python_json_writes_them():
    parsed = json.loads(_text({"a": np.array([np.nan, np.inf, -np.inf])}))["a"]
    assert math.isnan(parsed[0]) and parsed[1:] == [math.inf, -math.inf]


def test_small_answers_are_one_piece_and_big_ones_come_in_bounded_pieces():
    assert len(list(json_chunks({"root_id": np.uint64(5)}))) == 1
    assert len(list(json_chunks({"leaf_ids": IDS[:1000]}))) == 1
    pieces = list(json_chunks({"leaf_ids": np.tile(IDS, 4)}))
    assert len(pieces) > 4
    assert max(len(p) for p in pieces) < FLUSH_CHARS + CHUNK_VALUES * 24


def test_encoding_five_million_ids_needs_a_few_megabytes():
    ids = np.arange(5_000_000, dtype=np.uint64) | np.uint64(0x02 << 56)
    tracemalloc.start()
    try:
        size = sum(len(piece) for piece in json_chunks({"leaf_ids": ids}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size > 5_000_000 * 18  # every id has 18 digits and a comma
    assert peak < 100e6, f"encoding 5M ids peaked at {peak / 1e6:.0f} MB"


# -- over HTTP, on both engines ------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(server):
    return demo_world(server)


@pytest.fixture(scope="module")
def http(server, admin_token):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin_token}"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        response = session.request(method, server.url + path, **kwargs)
        assert response.status_code == 200, response.text
        return response

    return call


def _roots(http, svs) -> np.ndarray:
    return np.frombuffer(http("POST", T + "/roots_binary", data=np.asarray(svs, dtype="<u8").tobytes()).content, dtype="<u8")


def _json(response: requests.Response):
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_leaves_and_subgraph_answers(http, world):
    svs = world.soma_supervoxels[:3]
    roots = _roots(http, svs)
    root = int(roots[0])
    leaves = _json(http("GET", f"{T}/node/{root}/leaves"))["leaf_ids"]
    assert len(set(leaves)) == len(leaves) and int(svs[0]) in leaves
    assert "content-length" in http("GET", f"{T}/node/{root}/leaves").headers  # small answers are not streamed
    as_str = _json(http("GET", f"{T}/node/{root}/leaves", params={"int64_as_str": "true"}))["leaf_ids"]
    assert as_str == [str(i) for i in leaves]

    many = _json(http("POST", f"{T}/node/leaves_many", json={"node_ids": [int(r) for r in roots]}))
    assert set(many) == {str(int(r)) for r in roots}
    assert many[str(root)] == leaves

    sub = _json(http("GET", f"{T}/node/{root}/subgraph"))
    assert set(sub) == {"nodes", "affinities", "areas"}
    assert len(sub["nodes"]) == len(sub["affinities"]) == len(sub["areas"]) > 0
    assert all(len(pair) == 2 and set(pair) <= set(leaves) for pair in sub["nodes"])
    assert all(isinstance(a, float) for a in sub["affinities"]) and all(isinstance(a, int) for a in sub["areas"])
    sub_str = _json(http("GET", f"{T}/node/{root}/subgraph", params={"int64_as_str": "1"}))
    assert sub_str["nodes"] == [[str(a), str(b)] for a, b in sub["nodes"]]
    assert sub_str["affinities"] == sub["affinities"]


def test_a_big_answer_streams_and_parses_the_same(http, world):
    svs = np.resize(world.soma_supervoxels, 200_000)  # ~4 MB of root ids: more than one piece
    expected = _roots(http, svs).tolist()
    response = http("POST", f"{T}/roots", json={"node_ids": svs.tolist()})
    assert response.headers.get("transfer-encoding") == "chunked"
    assert _json(response) == {"root_ids": expected}
    as_str = _json(http("POST", f"{T}/roots", params={"int64_as_str": "true"}, json={"node_ids": svs.tolist()}))
    assert as_str == {"root_ids": [str(r) for r in expected]}
