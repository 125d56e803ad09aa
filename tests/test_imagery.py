"""The demo datastack's EM image: cloud-volume reads it at its ``image_source`` at several
scales with the same credentials as the watershed, it looks like EM (dark membranes, darker
nuclei), it is the same on every build, and only users who may view the graph read it."""

from __future__ import annotations

import filecmp

import numpy as np
import pytest
import requests
from scipy import ndimage

from opencave.services.imagery import build_image
from tests.support.demo import demo_world

IMAGE = "/volumes/opencave_demo/image"
BOX = (slice(0, 256), slice(0, 256), slice(0, 64))  # the whole small world


@pytest.fixture(scope="module")
def world(server):
    return demo_world(server)


@pytest.fixture(scope="module")
def image(server, admin_token):
    from cloudvolume import CloudVolume

    def at(mip: int) -> np.ndarray:
        volume = CloudVolume(
            f"precomputed://{server.url}{IMAGE}", mip=mip, progress=False, secrets={"user": "token", "password": admin_token}
        )
        x, y, z = BOX
        return np.asarray(volume[x.start >> mip : x.stop >> mip, y.start >> mip : y.stop >> mip, z])[..., 0]

    return {mip: at(mip) for mip in (0, 1)}


def _neurons(world) -> np.ndarray:
    """The world's neuron id of each voxel of BOX (0 where there is none)."""
    x, y, z = BOX
    labels = world.volume.cutout((x.start, y.start, z.start), (x.stop, y.stop, z.stop))
    graph = world.graph
    index = graph.sv_index(labels.ravel()).reshape(labels.shape)
    return np.where(index >= 0, graph.sv_neuron[np.maximum(index, 0)], 0)


def test_the_datastack_points_at_the_served_image(server, admin_token):
    headers = {"Authorization": f"Bearer {admin_token}"}
    info = requests.get(f"{server.url}/info/api/v2/datastack/full/opencave_demo", headers=headers).json()
    assert info["aligned_volume"]["image_source"] == f"precomputed://{server.url}{IMAGE}"
    response = requests.get(f"{server.url}{IMAGE}/info", headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    meta = response.json()
    assert (meta["type"], meta["data_type"], meta["num_channels"]) == ("image", "uint8", 1)
    scales = meta["scales"]
    assert len(scales) >= 3 and all(s["encoding"] == "jpeg" for s in scales)
    assert [s["resolution"] for s in scales[:2]] == [[8, 8, 40], [16, 16, 40]]
    assert scales[1]["size"][:2] == [s // 2 for s in scales[0]["size"][:2]]
    first = scales[0]
    assert first["voxel_offset"] == [0, 0, 0] and first["chunk_sizes"] == [[128, 128, 16]]
    chunk = requests.get(f"{server.url}{IMAGE}/{first['key']}/0-128_0-128_0-16", headers=headers)
    assert chunk.status_code == 200 and chunk.headers["content-type"] == "image/jpeg"
    assert chunk.content[:2] == b"\xff\xd8"  # a JPEG


def test_caveclient_image_cloudvolume_reads_it_with_http_credentials(server, admin_token, image, monkeypatch):
    """The genuine caveclient's ``image_cloudvolume()`` passes no credentials for a precomputed
    source: cloud-volume takes them from ~/.cloudvolume/secrets/http-secret.json (as loaded here)."""
    import caveclient
    import cloudfiles.secrets

    monkeypatch.setattr(cloudfiles.secrets, "HTTP_CREDENTIALS", {"user": "token", "password": admin_token})
    client = caveclient.CAVEclient("opencave_demo", server_address=server.url, auth_token=admin_token)
    volume = client.info.image_cloudvolume(progress=False, mip=1)
    assert np.array_equal(np.asarray(volume[0:64, 0:64, 0:16])[..., 0], image[1][0:64, 0:64, 0:16])


def test_cloudvolume_reads_an_image_that_looks_like_em(image, world):
    full = image[0].astype(np.float64)
    assert full.shape == (256, 256, 64) and 60 < full.mean() < 200 and full.std() > 20
    neurons = _neurons(world)
    other = np.zeros(neurons.shape, dtype=bool)  # a neuron voxel next to another object in x or y
    other[1:] |= neurons[1:] != neurons[:-1]
    other[:-1] |= neurons[1:] != neurons[:-1]
    other[:, 1:] |= neurons[:, 1:] != neurons[:, :-1]
    other[:, :-1] |= neurons[:, 1:] != neurons[:, :-1]
    boundary = other & (neurons > 0)
    interior = (neurons > 0) & ~ndimage.binary_dilation(other, iterations=3)
    assert boundary.sum() > 1000 and interior.sum() > 1000
    assert full[boundary].mean() < 0.8 * full[interior].mean()


def test_nuclei_are_darker_than_their_cytoplasm(image, world):
    full = image[0].astype(np.float64)
    neurons = _neurons(world)
    compared = 0
    for cell in world.cells:
        x, y, z = cell["nucleus_position"]
        neuron = cell["neuron_id"]
        cytoplasm = (neurons == neuron) & ~ndimage.binary_dilation(neurons != neuron, iterations=2)
        cytoplasm[max(x - 10, 0) : x + 11, max(y - 10, 0) : y + 11, :] = False
        if cytoplasm.sum() < 15:
            continue
        assert full[x - 1 : x + 2, y - 1 : y + 2, z].mean() < full[cytoplasm].mean() - 10, neuron
        compared += 1
    assert compared >= 3


def test_coarser_scale_is_the_finer_one_halved(image):
    fine = image[0].astype(np.float64)
    halved = fine.reshape(128, 2, 128, 2, -1).mean(axis=(1, 3))
    assert image[1].shape == halved.shape
    assert np.abs(image[1] - halved).mean() < 8  # JPEG loses a little on both


def test_the_image_is_the_same_on_every_build(server, world, tmp_path):
    rebuilt = tmp_path / "image"
    build_image(world.directory, rebuilt)
    served = world.directory / "image"
    files = sorted(p.relative_to(served) for p in served.rglob("*") if p.is_file())
    assert len(files) > 10
    assert sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*") if p.is_file()) == files
    _, mismatch, errors = filecmp.cmpfiles(served, rebuilt, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []


def test_only_viewers_of_the_graph_read_it(server, admin_token):
    chunk = f"{server.url}{IMAGE}/8_8_40/0-128_0-128_0-16"
    for url in (f"{server.url}{IMAGE}/info", chunk):
        response = requests.get(url)
        assert response.status_code == 401 and response.json()["code"] == 401
    email = "image-outsider@example.org"
    server.cli("user", "add", email, check=False)
    server.cli("group", "remove-user", "default", email, check=False)
    outsider = {"Authorization": f"Bearer {server.new_token(email)}"}
    response = requests.get(chunk, headers=outsider)
    assert response.status_code == 403 and "view" in response.json()["message"]
    keyed = requests.get(f"{server.url}/segmentation/table/opencave_demo/info", headers={"Authorization": f"Bearer {admin_token}"})
    data_dir = keyed.json()["data_dir"]
    assert requests.get(data_dir.removesuffix("/ws") + "/image/info").status_code == 200
    assert requests.put(chunk, data=b"x", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 405


def test_unknown_files_are_404_json(server, admin_token):
    headers = {"Authorization": f"Bearer {admin_token}"}
    for name in ("provenance", "8_8_40/1-2_3-4_5-6", "99_99_40/0-128_0-128_0-16", "8_8_40", "info/x"):
        response = requests.get(f"{server.url}{IMAGE}/{name}", headers=headers)
        assert response.status_code == 404, name
        assert response.json()["code"] == 404
    response = requests.get(f"{server.url}/volumes/no_such_graph/image/info", headers=headers)
    assert response.status_code == 404 and "no_such_graph" in response.json()["message"]
