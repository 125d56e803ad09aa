"""Volume files reached through the ``data_dir`` of a graph's info: cloud-volume reads them with
no token (caveclient's ``segmentation_cloudvolume()`` sends the token to the graphene API only),
so the ``data_dir`` carries an access key naming the user, checked against their permission on
every read."""

from __future__ import annotations

import caveclient
import numpy as np
import pytest
import requests

import opencave
from tests.support.demo import demo_world

DS = "opencave_demo"
TABLE = "opencave_demo"


@pytest.fixture(scope="module")
def world(server):
    return demo_world(server)


def _data_dir(server, token: str) -> str:
    response = requests.get(f"{server.url}/segmentation/table/{TABLE}/info", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    return response.json()["data_dir"]


def _biggest_root(client, world) -> int:
    neuron_svs = world.graph.sv_ids[world.graph.sv_neuron > 0]
    roots, counts = np.unique(client.chunkedgraph.get_roots(neuron_svs), return_counts=True)
    return int(roots[np.argmax(counts)])


@pytest.mark.parametrize("module", [caveclient, opencave], ids=["caveclient", "opencave"])
def test_segmentation_cloudvolume_reads_meshes_and_voxels_unchanged(server, admin_token, world, module):
    client = module.CAVEclient(DS, server_address=server.url, auth_token=admin_token)
    root = _biggest_root(client, world)
    volume = client.info.segmentation_cloudvolume(progress=False)
    mesh = volume.mesh.get(root, remove_duplicate_vertices=True)[root]
    assert len(mesh.vertices) > 100 and len(mesh.faces) > 100
    sv = int(client.chunkedgraph.get_leaves(root)[0])
    corner = np.asarray(world.voxel_of(sv))
    cutout = np.asarray(volume.download_point(corner, size=8, agglomerate=False, mip=0))
    assert sv in cutout


def test_data_dir_names_the_user_and_the_key_is_checked(server, admin_token):
    data_dir = _data_dir(server, admin_token)
    assert f"/volumes/{TABLE}/access/u" in data_dir and data_dir.endswith("/ws")
    assert requests.get(f"{data_dir}/info").status_code == 200
    key = data_dir.split("/access/")[1].split("/")[0]
    forged = key[:-1] + ("0" if key[-1] != "0" else "1")
    for bad in (data_dir.replace(key, forged), data_dir.replace(key, "u1-" + "0" * 32), data_dir.replace(key, "nonsense")):
        response = requests.get(f"{bad}/info")
        assert response.status_code == 401, response.text
        body = response.json()
        assert body["code"] == 401 and "access key" in body["message"]


def test_a_key_stops_working_when_its_user_loses_view_permission(server):
    email = "volume-reader@example.org"
    server.cli("user", "add", email, check=False)
    server.cli("group", "add-user", "default", email, check=False)
    token = server.new_token(email)
    data_dir = _data_dir(server, token)
    assert requests.get(f"{data_dir}/info").status_code == 200
    server.cli("group", "remove-user", "default", email)
    try:
        response = requests.get(f"{data_dir}/info")
        assert response.status_code == 403, response.text
        assert "Missing permission: view" in response.json()["message"]
    finally:
        server.cli("group", "add-user", "default", email)
    assert requests.get(f"{data_dir}/info").status_code == 200
