"""cloud-volume pointed at a server's graphene source, as a user's script would open it."""

from __future__ import annotations

from typing import Any


def graphene_volume(server_url: str, table: str, token: str, **options: Any):
    """The graphene segmentation ``table`` of the server at ``server_url``: the CAVE token for the
    graphene API, and HTTP Basic credentials (the token as password) for the volume files."""
    from cloudvolume import CloudVolume

    return CloudVolume(
        f"graphene://{server_url}/segmentation/table/{table}",
        mip=0,
        progress=False,
        use_https=False,
        secrets={"token": token, "user": "token", "password": token},
        **options,
    )
