"""caveclient's ``tools/testing.py`` (``CAVEclientMock``) from the source of the suite being
run, executed here so that its ``from .. import endpoints`` and ``from ..frameworkclient
import CAVEclient`` build opencave's client. ``CAVECLIENT_SOURCE`` names that source tree."""

import os
from pathlib import Path

_source = Path(os.environ["CAVECLIENT_SOURCE"]) / "caveclient" / "tools" / "testing.py"
exec(compile(_source.read_text(), str(_source), "exec"))
