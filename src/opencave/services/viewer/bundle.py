"""The static Neuroglancer client shipped in the ``neuroglancer`` package, served as opencave's viewer.

The package ships Neuroglancer's Python-integration build: it expects to be served at
``<prefix>/v/<viewer id>/`` by a Python process that pushes states to it (``/events``) and
answers its credential requests (``/credentials``). opencave answers the credential requests
(the user's token for this server's ``middleauth+`` sources) and pushes nothing: the viewer's
state lives in its URL. Two changes are made to the files as shipped:

- ``index.html`` gets a short script first: a viewer opened without a state starts from an
  empty one in its URL (so it does not try to send its state to a Python process), and the
  event stream a Python process would keep open reports itself open and silent.
- Neuroglancer registers its ``middleauth+`` sources for ``https`` only, so a server reached over
  plain http (loopback, a lab network) could not authenticate the viewer; the bundle registers
  them for ``http`` as well. The token still goes only to this server (see the credentials route).
"""

from __future__ import annotations

import importlib.metadata
import mimetypes
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

# Webpack names assets by content hash: ``main.<16 hex>.js``, ``<16 hex>.wasm``; they never change.
_HASHED = re.compile(r"(^|\.)[0-9a-f]{16}\.")
_MIDDLEAUTH_SCHEMES = re.compile(r'(="middleauth\+";function \w+\(\w+,\w+\)\{for\(let \w+ of\[)"https"\]')
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".wasm": "application/wasm",
}
STANDALONE_SCRIPT = """<script>
// Served by opencave without Neuroglancer's Python process: the state lives in the URL.
if (!location.hash) history.replaceState(null, "", "#!{}");
(() => {
  const Native = window.EventSource;
  window.EventSource = function (url, options) {
    if (!new URL(url, location.href).pathname.includes("/events/")) return new Native(url, options);
    const silent = { readyState: 1, close() { this.readyState = 2; } };  // no process pushes states
    setTimeout(() => silent.onopen && silent.onopen(), 0);
    return silent;
  };
})();
</script>"""


@dataclass(frozen=True)
class Asset:
    name: str
    content: bytes
    media_type: str
    immutable: bool  # content-hashed name: cacheable for ever


@dataclass
class ViewerBundle:
    """The client's files, each read once when first asked for and then answered from memory."""

    directory: Path
    version: str
    _assets: dict[str, Asset] = field(default_factory=dict, repr=False)

    @classmethod
    def installed(cls) -> ViewerBundle:
        """The client of the installed ``neuroglancer`` package."""
        import neuroglancer

        directory = Path(neuroglancer.__file__).parent / "static" / "client"
        return cls(directory, importlib.metadata.version("neuroglancer"))

    @cached_property
    def names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.directory.iterdir() if p.is_file())

    def asset(self, name: str) -> Asset | None:
        """The file ``name`` of the client (no directories: only the names it ships), or None."""
        if name not in self.names:
            return None
        cached = self._assets.get(name)
        if cached is None:
            content = (self.directory / name).read_bytes()
            if name == "index.html":
                content = content.replace(b"<head>", b"<head>" + STANDALONE_SCRIPT.encode(), 1)
            elif name.endswith(".js") and b'"middleauth+"' in content:
                content = _MIDDLEAUTH_SCHEMES.sub(r'\1"https","http"]', content.decode("utf-8")).encode("utf-8")
            media_type = _TYPES.get(Path(name).suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
            cached = Asset(name, content, media_type, bool(_HASHED.search(name)))
            self._assets[name] = cached
        return cached

    def version_info(self) -> dict:
        """``version.json``: a current Neuroglancer, which takes ``#!middleauth+<state URL>`` links."""
        return {"version": self.version, "source": "https://github.com/google/neuroglancer"}
