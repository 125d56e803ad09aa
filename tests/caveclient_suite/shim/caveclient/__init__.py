"""``caveclient``, answered by opencave's client: caveclient 8.2.1's own tests import this
package (it comes first on the path of the process that runs them) and so test opencave.

Submodules caveclient's tests import are opencave's modules under caveclient's names;
``caveclient.endpoints`` lists opencave's URL templates under caveclient's names, and
``caveclient.tools.testing`` is caveclient's own test helper from the suite's source, run
against these modules.
"""

from __future__ import annotations

import importlib
import sys

from opencave.client import *  # noqa: F403
from opencave.client import CAVEclient, get_session_defaults, set_session_defaults  # noqa: F401

__version__ = "8.2.1"

# caveclient module -> the opencave module with its classes and functions.
MODULES = {
    "annotationengine": "opencave.client.annotation",
    "auth": "opencave.client.auth",
    "base": "opencave.client.base",
    "chunkedgraph": "opencave.client.chunkedgraph",
    "datastack_lookup": "opencave.client.datastack_lookup",
    "emannotationschemas": "opencave.client.schema",
    "format_utils": "opencave.client.formats",
    "frameworkclient": "opencave.client.framework",
    "infoservice": "opencave.client.info",
    "jsonservice": "opencave.client.state",
    "l2cache": "opencave.client.l2cache",
    "materializationengine": "opencave.client.materialize",
    "session_config": "opencave.client.session",
    "skeletonservice": "opencave.client.skeleton",
    "tools.stage": "opencave.client.stage",
    "tools.table_manager": "opencave.client.table_manager",
}

for _name, _target in MODULES.items():
    _module = importlib.import_module(_target)
    sys.modules[f"{__name__}.{_name}"] = _module
    _parent, _, _leaf = f"{__name__}.{_name}".rpartition(".")
    setattr(importlib.import_module(_parent), _leaf, _module)

from . import endpoints  # noqa: E402,F401
