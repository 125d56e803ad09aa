"""Neuroglancer states and links built on the server, for pages that offer "open in Neuroglancer".

A state shows a datastack's image (when it has one), its graphene segmentation with the chosen
root ids selected (their meshes drawn) and, optionally, points as an annotation layer, with the
view centred on the first point. Graphene sources and this server's own precomputed ones get
the ``middleauth+`` prefix, so the viewer reads them with the user's token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from urllib.parse import quote, urlsplit

IMAGE_LAYER = "img"
SEGMENTATION_LAYER = "seg"
ANNOTATION_LAYER = "annotations"
MIDDLEAUTH = "middleauth+"
# A source read over http(s): ``<format>://http(s)://...`` (not yet ``middleauth+``).
_SOURCE = re.compile(r"^(graphene|precomputed)://(https?://.*)$")
# Characters Neuroglancer leaves unescaped in the fragment; everything else is percent-encoded.
_FRAGMENT_SAFE = "{}[]:,\"'!~*()/?@$+=;-._"


def viewer_source(source: str, server_url: str | None = None) -> str:
    """``source`` as the viewer should load it: graphene sources, and precomputed ones on
    ``server_url`` (this server's image), get ``middleauth+`` before their URL, so the viewer
    reads them with the user's token; others (public buckets, other sites) are unchanged."""
    match = _SOURCE.match(source)
    if match is None:
        return source
    kind, url = match.groups()
    on_server = server_url is not None and _origin(url) == _origin(server_url)
    return f"{kind}://{MIDDLEAUTH}{url}" if kind == "graphene" or on_server else source


def viewer_resolution(datastack_info: dict) -> tuple[float, float, float]:
    """The datastack's viewer voxel size in nm (x, y, z); 1 nm where it names none."""
    return tuple(float(datastack_info.get(f"viewer_resolution_{axis}") or 1.0) for axis in "xyz")  # type: ignore[return-value]


def neuroglancer_state(
    datastack_info: dict,
    *,
    root_ids: Iterable[int] = (),
    points: Iterable[Sequence[float]] = (),
    point_resolution: Sequence[float] | None = None,
    timestamp: datetime | None = None,
    version: int | None = None,
) -> dict:
    """A Neuroglancer state for ``datastack_info`` (the ``/info`` datastack record).

    ``root_ids`` are selected in the segmentation layer, so their meshes are drawn; ``points``
    (in voxels of ``point_resolution``, by default the datastack's viewer resolution, as CAVE
    tables give positions) become an annotation layer and the view is centred on the first.
    ``timestamp`` or ``version`` (the moment or materialization version the roots belong to)
    names the layer, so a reader knows which moment the selection is of.
    """
    resolution = viewer_resolution(datastack_info)
    scale = [p / r for p, r in zip(point_resolution or resolution, resolution)]
    points = [tuple(point) for point in points]
    if any(len(point) != 3 for point in points):
        raise ValueError("Each point needs three coordinates (x, y, z).")
    positions = [[float(c) * s for c, s in zip(point, scale)] for point in points]
    layers: list[dict] = []
    server = datastack_info.get("local_server")
    image_source = (datastack_info.get("aligned_volume") or {}).get("image_source")
    if image_source:
        layers.append({"type": "image", "source": viewer_source(image_source, server), "name": IMAGE_LAYER})
    segmentation_source = datastack_info.get("segmentation_source")
    if segmentation_source:
        layers.append(
            {
                "type": "segmentation",
                "source": viewer_source(segmentation_source, server),
                "segments": [str(int(root_id)) for root_id in root_ids],
                "name": SEGMENTATION_LAYER + _moment(timestamp, version),
            }
        )
    if positions:
        layers.append(
            {
                "type": "annotation",
                "source": {"url": "local://annotations"},
                "annotations": [{"type": "point", "point": p, "id": str(i)} for i, p in enumerate(positions)],
                "name": ANNOTATION_LAYER,
            }
        )
    state: dict = {
        "dimensions": {axis: [r * 1e-9, "m"] for axis, r in zip("xyz", resolution)},
        "layers": layers,
        "layout": "xy-3d",
        "showSlices": False,
    }
    if positions:
        state["position"] = positions[0]
    return state


def neuroglancer_url(viewer_site: str, state: dict) -> str:
    """The link that opens ``state`` in the Neuroglancer at ``viewer_site``: ``{site}/#!{json}``."""
    text = json.dumps(state, separators=(",", ":"))
    return viewer_site.rstrip("/") + "/#!" + quote(text, safe=_FRAGMENT_SAFE)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _moment(timestamp: datetime | None, version: int | None) -> str:
    if version is not None:
        return f" (v{int(version)})"
    if timestamp is not None:
        return f" ({timestamp.isoformat(timespec='seconds')})"
    return ""
