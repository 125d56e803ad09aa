"""caveclient's ``endpoints`` module names, holding opencave's URL templates
(``opencave.wire.endpoints``), so the suite builds its expected URLs from opencave's table."""

from __future__ import annotations

from opencave.client import state as _state
from opencave.wire import endpoints as _wire

default_global_server_address = _wire.DEFAULT_GLOBAL_SERVER

annotation_common = dict(_wire.ANNOTATION.common)
annotation_endpoints_v2 = _wire.ANNOTATION.versions[2]
annotation_api_versions = dict(_wire.ANNOTATION.versions)

materialization_common = dict(_wire.MATERIALIZE.common)
# caveclient lists the API-versions probe among each version's templates too.
_probe = {"get_api_versions": _wire.MATERIALIZE.common["get_api_versions"]}
materialization_endpoints_v2 = {**_probe, **_wire.MATERIALIZE.versions[2]}
materialization_endpoints_v3 = {**_probe, **_wire.MATERIALIZE.versions[3]}
materialization_api_versions = {2: materialization_endpoints_v2, 3: materialization_endpoints_v3}

infoservice_common = dict(_wire.INFO.common)
infoservice_endpoints_v1 = _wire.INFO.versions[1]
infoservice_endpoints_v2 = _wire.INFO.versions[2]
infoservice_api_versions = dict(_wire.INFO.versions)

chunkedgraph_endpoints_common = dict(_wire.CHUNKEDGRAPH.common)
chunkedgraph_endpoints_legacy = _wire.CHUNKEDGRAPH.versions[0]
chunkedgraph_endpoints_v1 = _wire.CHUNKEDGRAPH.versions[1]
chunkedgraph_api_versions = dict(_wire.CHUNKEDGRAPH.versions)

schema_endpoints_common = dict(_wire.SCHEMA.common)
schema_endpoints_v1 = _wire.SCHEMA.versions[1]
schema_endpoints_v2 = _wire.SCHEMA.versions[2]
schema_api_versions = dict(_wire.SCHEMA.versions)

jsonservice_common = dict(_wire.NGLSTATE.common)
jsonservice_endpoints_legacy = _wire.NGLSTATE.versions[0]
jsonservice_endpoints_v1 = _wire.NGLSTATE.versions[1]
jsonservice_api_versions = dict(_wire.NGLSTATE.versions)

auth_common = dict(_wire.AUTH.common)
auth_endpoints_v1 = _wire.AUTH.versions[1]
auth_api_versions = dict(_wire.AUTH.versions)

l2cache_endpoints_common = dict(_wire.L2CACHE.common)
l2cache_endpoints_v1 = _wire.L2CACHE.versions[1]
l2cache_api_versions = dict(_wire.L2CACHE.versions)

skeletonservice_common = dict(_wire.SKELETON.common)
skeletonservice_endpoints_v1 = {**_wire.SKELETON.common, **_wire.SKELETON.versions[1]}
skeletonservice_api_versions = {1: skeletonservice_endpoints_v1}

ngl_endpoints_common = {"get_info": _state.NGL_INFO_TEMPLATE, "fallback_ngl_url": _state.FALLBACK_NGL_URL}
