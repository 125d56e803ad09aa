"""The bundled Neuroglancer: links built on the server, the static client, and the viewer itself."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import unquote

import pytest

from opencave.services.viewer.links import neuroglancer_state, neuroglancer_url, viewer_source

INFO = {
    "aligned_volume": {"name": "v", "image_source": "precomputed://http://127.0.0.1:9/volumes/v/image"},
    "segmentation_source": "graphene://http://127.0.0.1:9/segmentation/table/v",
    "viewer_resolution_x": 4.0,
    "viewer_resolution_y": 4.0,
    "viewer_resolution_z": 40.0,
}


# -- link builder ------------------------------------------------------------------------------
def test_state_has_image_segmentation_and_points_centred_on_the_first():
    state = neuroglancer_state(INFO, root_ids=[2**63 - 5, 7], points=[(10, 20, 3), (1, 2, 3)])
    image, seg, points = state["layers"]
    assert image == {"type": "image", "source": INFO["aligned_volume"]["image_source"], "name": "img"}
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


def test_middleauth_prefix_is_added_once_and_only_to_graphene_urls():
    assert viewer_source("graphene://https://h/segmentation/table/t") == "graphene://middleauth+https://h/segmentation/table/t"
    already = "graphene://middleauth+https://h/segmentation/table/t"
    assert viewer_source(already) == already
    assert viewer_source("precomputed://gs://bucket/image") == "precomputed://gs://bucket/image"


def test_url_is_the_state_after_hash_bang_and_round_trips():
    state = neuroglancer_state(INFO, root_ids=[1], points=[(1, 2, 3)])
    url = neuroglancer_url("http://127.0.0.1:9/neuroglancer/", state)
    prefix = "http://127.0.0.1:9/neuroglancer/#!"
    assert url.startswith(prefix)
    fragment = url[len(prefix) :]
    assert " " not in fragment and "#" not in fragment
    assert json.loads(unquote(fragment)) == state
    assert neuroglancer_url("http://127.0.0.1:9/neuroglancer", state) == url
