"""Access keys in volume URLs: reading a graph's files without presenting a token.

cloud-volume and Neuroglancer read a graph's watershed chunks and mesh fragments from the
``data_dir`` of its info over plain HTTP; caveclient's ``segmentation_cloudvolume()`` gives the
CAVE token to the graphene API only, never to those file reads (a CAVE deployment keeps the
files in a cloud bucket). So the ``data_dir`` an authorised user receives carries a key naming
that user, signed with the server's secret: whoever holds the URL reads the files, and only for
as long as that user may view the graph (the permission is checked on every read).
"""

from __future__ import annotations

import hashlib
import hmac
import re

_KEY = re.compile(r"^u(\d{1,18})-([0-9a-f]{32})$")


def volume_key(secret: str, user_id: int, table_id: str) -> str:
    """The key that lets ``user_id``'s URLs read ``table_id``'s volume files."""
    mac = hmac.new(secret.encode(), f"volume-read:{user_id}:{table_id}".encode(), hashlib.sha256)
    return f"u{user_id}-{mac.hexdigest()[:32]}"


def user_of_volume_key(secret: str, key: str, table_id: str) -> int | None:
    """The user a key was made for, or None when it is not a valid key for ``table_id``."""
    match = _KEY.match(key)
    if match is None:
        return None
    user_id = int(match[1])
    return user_id if hmac.compare_digest(volume_key(secret, user_id, table_id), key) else None
