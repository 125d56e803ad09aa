"""Cloud-path formatting for ``info.*_source(format_for=...)``.

The info service stores paths as deployments wrote them (``precomputed://gs://…``,
``graphene://https://…``, ``gs://…``, ``https://…``); each consumer wants its own flavour.
Results equal caveclient 8.2.1's for every input, bugs included, because user code and
notebooks compare and store these strings:

* ``raw`` — unchanged.
* ``cloudvolume`` — ``graphene://`` and ``precomputed://`` unchanged; ``http(s)://…`` →
  ``precomputed://http(s)://…``; ``gs://b/p`` → ``precomputed://https://storage.googleapis.com/p``
  (caveclient drops the bucket name).
* ``neuroglancer`` — always the graphene formatter (caveclient's condition is always true):
  ``http(s)://x`` → ``graphene://http(s)://x``, ``graphene://`` unchanged, anything else
  (``precomputed://``, ``gs://``) → None.
* ``cave_explorer`` / ``cave-explorer`` / ``spelunker`` — ``graphene://https://h/p`` and
  ``https://h/p`` → ``graphene://middleauth+https://h/p``; ``precomputed://`` → None.

Unknown ``format_for`` values raise ValueError (caveclient returns the raw path from some
methods and fails with a TypeError in others).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse

Formatter = Callable[[str | None], str | None]

_HTTP = ("http", "https")


def _parts(objurl: str | None) -> tuple[str, str, str]:
    """(scheme, netloc, path) of a path; empty strings for None."""
    parsed = urlparse(objurl or "")
    return parsed.scheme, parsed.netloc, parsed.path


def format_raw(objurl: str | None) -> str | None:
    return objurl


def format_graphene(objurl: str | None) -> str | None:
    scheme, _, _ = _parts(objurl)
    if scheme in _HTTP:
        return f"graphene://{objurl}"
    if scheme == "graphene":
        return objurl
    return None


def format_precomputed_https(objurl: str | None) -> str | None:
    scheme, _, path = _parts(objurl)
    if scheme == "gs":
        return f"precomputed://https://storage.googleapis.com/{path[1:]}"
    if scheme in _HTTP:
        return f"precomputed://{objurl}"
    return None


def format_precomputed_neuroglancer(objurl: str | None) -> str | None:
    scheme, _, path = _parts(objurl)
    if scheme == "gs":
        return f"precomputed://{objurl}"
    if scheme in _HTTP:
        return f"precomputed://gs://{path[1:]}"
    return None


def format_cloudvolume(objurl: str | None) -> str | None:
    scheme, _, _ = _parts(objurl)
    if scheme == "graphene":
        return format_graphene(objurl)
    if scheme == "gs" or scheme in _HTTP:
        return format_precomputed_https(objurl)
    if scheme == "precomputed":
        return objurl
    return None


def format_neuroglancer(objurl: str | None) -> str | None:
    return format_graphene(objurl)


def format_verbose_graphene(objurl: str | None) -> str | None:
    scheme, netloc, path = _parts(objurl)
    if scheme in _HTTP:
        return f"graphene://middleauth+{objurl}"
    if scheme == "graphene":
        # For graphene://https://h/p the netloc is "https:" and the path "//h/p".
        return f"graphene://middleauth+{netloc}{path}"
    return None


def format_cave_explorer(objurl: str | None) -> str | None:
    scheme, _, _ = _parts(objurl)
    if scheme in ("graphene", "https"):
        return format_verbose_graphene(objurl)
    if scheme == "precomputed":
        return format_precomputed_neuroglancer(objurl)
    return None


output_map: dict[str, Formatter] = {
    "raw": format_raw,
    "cloudvolume": format_cloudvolume,
    "neuroglancer": format_neuroglancer,
    "cave_explorer": format_cave_explorer,
    "cave-explorer": format_cave_explorer,
    "spelunker": format_cave_explorer,
}


def format_path(objurl: str | None, format_for: str = "raw") -> str | None:
    """Format ``objurl`` for ``format_for`` (one of ``output_map``'s keys)."""
    try:
        formatter = output_map[format_for]
    except KeyError:
        raise ValueError(f"format_for must be one of {sorted(output_map)}, got {format_for!r}") from None
    return formatter(objurl)
