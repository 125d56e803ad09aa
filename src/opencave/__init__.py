"""opencave: a complete, self-hostable CAVE — server, client and demo datastack in one package."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("opencave")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
