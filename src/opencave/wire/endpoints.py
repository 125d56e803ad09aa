"""One table of every CAVE service's URL templates.

The client formats these templates to build request URLs; the server derives its route paths
from the same strings (``route_path``), so the two cannot drift apart. Templates follow CAVE's
conventions: each begins with a ``{<service>_server_address}`` placeholder and names its
parameters as caveclient does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_GLOBAL_SERVER = "https://global.daf-apis.com"


@dataclass(frozen=True)
class ServiceEndpoints:
    """URL templates of one service: always-present ones plus one dict per API version."""

    server_key: str
    common: dict[str, str] = field(default_factory=dict)
    versions: dict[int, dict[str, str]] = field(default_factory=dict)

    def for_version(self, version: int) -> dict[str, str]:
        """Common templates merged with those of ``version``."""
        if version not in self.versions:
            raise ValueError("No corresponding API version")
        return {**self.common, **self.versions[version]}


_AUTH_V1 = "{auth_server_address}/auth/api/v1"
AUTH = ServiceEndpoints(
    server_key="auth_server_address",
    versions={
        1: {
            "refresh_token": _AUTH_V1 + "/refresh_token",
            "create_token": _AUTH_V1 + "/create_token",
            "get_tokens": _AUTH_V1 + "/user/token",
            "delete_token": _AUTH_V1 + "/user/token/{token_id}",
            "get_users": _AUTH_V1 + "/user",
            "get_user": _AUTH_V1 + "/user/{user_id}",
            "get_me": _AUTH_V1 + "/user/me",
            "user_cache": _AUTH_V1 + "/user/cache",
            "my_permissions": _AUTH_V1 + "/my_permissions",
            "usernames": _AUTH_V1 + "/username",
            "get_group_users": _AUTH_V1 + "/group/{group_id}/user",
            "groups": _AUTH_V1 + "/group",
            "datasets": _AUTH_V1 + "/dataset",
            "logout": _AUTH_V1 + "/logout",
            "service_dataset": _AUTH_V1 + "/service/{namespace}/table/{table_name}/dataset",
            "version": "{auth_server_address}/auth/version",
            "user_tokens_page": "{auth_server_address}/sticky_auth/settings/tokens",
            "login_page": "{auth_server_address}/sticky_auth/login",
            "logout_page": "{auth_server_address}/sticky_auth/logout",
            "authorize": "{auth_server_address}/sticky_auth/api/v1/authorize",
            "tos_accept": "{auth_server_address}/sticky_auth/api/v1/tos/{tos_id}/accept",
        }
    },
)

_INFO_V2 = "{i_server_address}/info/api/v2"
INFO = ServiceEndpoints(
    server_key="i_server_address",
    common={
        "get_version": "{i_server_address}/info/version",
        "get_api_versions": "{i_server_address}/info/api/versions",
    },
    versions={
        1: {
            "datasets": "{i_server_address}/info/api/datasets",
            "dataset_info": "{i_server_address}/info/api/dataset/{dataset_name}",
        },
        2: {
            "aligned_volumes": _INFO_V2 + "/aligned_volume",
            "aligned_volume_info": _INFO_V2 + "/aligned_volume/{aligned_volume_name}",
            "aligned_volume_by_id": _INFO_V2 + "/aligned_volume/id/{aligned_volume_id}",
            "datastacks": _INFO_V2 + "/datastacks",
            "datastack_info": _INFO_V2 + "/datastack/full/{datastack_name}",
            "datastacks_from_aligned_volume": _INFO_V2
            + "/aligned_volume/{aligned_volume_name}/datastacks",
            "image_sources": _INFO_V2 + "/datastack/{datastack_name}/image_sources",
        },
    },
)

_SCHEMA_V2 = "{emas_server_address}/schema/api/v2"
SCHEMA = ServiceEndpoints(
    server_key="emas_server_address",
    common={"get_api_versions": "{emas_server_address}/schema/versions"},
    versions={
        1: {
            "schema": "{emas_server_address}/schema/type",
            "schema_definition": "{emas_server_address}/schema/type/{schema_type}",
        },
        2: {
            "schema": _SCHEMA_V2 + "/type",
            "schema_definition": _SCHEMA_V2 + "/type/{schema_type}",
            "schema_definition_multi": _SCHEMA_V2 + "/types",
            "schema_definition_all": _SCHEMA_V2 + "/types_all",
        },
    },
)

_CG = "{cg_server_address}/segmentation"
_CG_LEGACY = _CG + "/1.0"
_CG_V1 = _CG + "/api/v1"
_CG_TABLE = _CG_V1 + "/table/{table_id}"
# ``cloudvolume_path`` is a graphene:// data source, not a route (route_path rejects it).
CHUNKEDGRAPH = ServiceEndpoints(
    server_key="cg_server_address",
    common={
        "get_api_versions": _CG + "/api/versions",
        "get_version": _CG + "/api/version",
        "info": _CG + "/table/{table_id}/info",
    },
    versions={
        0: {
            "handle_root": _CG_LEGACY + "/{table_id}/graph/root",
            "handle_children": _CG_LEGACY + "/segment/{node_id}/children",
            "leaves_from_root": _CG_LEGACY + "/{table_id}/segment/{root_id}/leaves",
            "merge_log": _CG_LEGACY + "/{table_id}/segment/{root_id}/merge_log",
            "change_log": _CG_LEGACY + "/{table_id}/segment/{root_id}/change_log",
            "contact_sites": _CG_LEGACY + "/{table_id}/segment/{root_id}/contact_sites",
            "cloudvolume_path": "graphene://" + _CG_LEGACY + "/{table_id}",
        },
        1: {
            "handle_root": _CG_TABLE + "/node/{supervoxel_id}/root",
            "handle_roots": _CG_TABLE + "/roots",
            "handle_children": _CG_TABLE + "/node/{root_id}/children",
            "leaves_from_root": _CG_TABLE + "/node/{root_id}/leaves",
            "do_merge": _CG_TABLE + "/merge",
            "get_roots": _CG_TABLE + "/roots_binary",
            "leaves_many": _CG_TABLE + "/node/leaves_many",
            "minimal_covering_nodes": _CG_TABLE + "/minimal_covering_nodes",
            "merge_log": _CG_TABLE + "/root/{root_id}/merge_log",
            "change_log": _CG_TABLE + "/root/{root_id}/change_log",
            "tabular_change_log": _CG_TABLE + "/tabular_change_log_many",
            "contact_sites": _CG_TABLE + "/node/{root_id}/contact_sites",
            "contact_sites_pairwise": _CG_TABLE + "/contact_sites_pair/{root_id_1}/{root_id_2}",
            "cloudvolume_path": "graphene://" + _CG_V1 + "/{table_id}",
            "find_path": _CG_TABLE + "/graph/find_path",
            "lvl2_graph": _CG_TABLE + "/node/{root_id}/lvl2_graph",
            "remesh_level2_chunks": "{cg_server_address}/meshing/api/v1/table/{table_id}/remeshing",
            "get_subgraph": _CG_TABLE + "/node/{root_id}/subgraph",
            "handle_lineage_graph": _CG_TABLE + "/lineage_graph_multiple",
            "past_id_mapping": _CG_TABLE + "/past_id_mapping",
            "operation_details": _CG_TABLE + "/operation_details",
            "user_operations": _CG_TABLE + "/user_operations",
            "is_latest_roots": _CG_TABLE + "/is_latest_roots",
            "root_timestamps": _CG_TABLE + "/root_timestamps",
            "delta_roots": _CG_TABLE + "/delta_roots",
            "preview_split": _CG_TABLE + "/graph/split_preview",
            "valid_nodes": _CG_TABLE + "/valid_nodes",
            "execute_split": _CG_TABLE + "/split",
            "undo": _CG_TABLE + "/undo",
            "oldest_timestamp": _CG_TABLE + "/oldest_timestamp",
            "label_roots": _CG_TABLE + "/label/{label}/roots",  # opencave's own: an ingested label's roots
        },
    },
)

_L2CACHE_V1 = "{l2cache_server_address}/l2cache/api/v1"
L2CACHE = ServiceEndpoints(
    server_key="l2cache_server_address",
    versions={
        1: {
            "l2cache_data": _L2CACHE_V1 + "/table/{table_id}/attributes",
            "l2cache_meta": _L2CACHE_V1 + "/attribute_metadata",
            "l2cache_table_mapping": _L2CACHE_V1 + "/table_mapping",
        }
    },
)

_ANNO_V2 = "{ae_server_address}/annotation/api/v2/aligned_volume/{aligned_volume_name}"
ANNOTATION = ServiceEndpoints(
    server_key="ae_server_address",
    versions={
        2: {
            "tables": _ANNO_V2 + "/table",
            "table_info": _ANNO_V2 + "/table/{table_name}",
            "annotations": _ANNO_V2 + "/table/{table_name}/annotations",
            "table_count": _ANNO_V2 + "/table/{table_name}/count",
            "table_import": _ANNO_V2 + "/table/{table_name}/import",  # opencave's own: rows from a file
        },
    },
)

_MAT = "{me_server_address}/materialize"
_MAT_V2 = _MAT + "/api/v2"
_MAT_V3 = _MAT + "/api/v3"
_DS2 = _MAT_V2 + "/datastack/{datastack_name}"
_DS3 = _MAT_V3 + "/datastack/{datastack_name}"
# caveclient keeps ``tables``, ``table_count``, ``ingest_annotation_table`` and
# ``lookup_supervoxel_ids`` on v2 even for API 3, and ``live_live_query`` on v3 for both.
_MAT_SHARED = {
    "table_count": _DS2 + "/version/{version}/table/{table_name}/count",
    "tables": _DS2 + "/version/{version}/tables",
    "ingest_annotation_table": _MAT_V2 + "/materialize/run/ingest_annotations/datastack/{datastack_name}/{table_name}",
    "lookup_supervoxel_ids": _MAT_V2 + "/materialize/run/lookup_svid/datastack/{datastack_name}/{table_name}",
    "live_live_query": _DS3 + "/query",
}
MATERIALIZE = ServiceEndpoints(
    server_key="me_server_address",
    common={
        "get_api_versions": _MAT + "/api/versions",
        "get_version": _MAT + "/version",
    },
    versions={
        2: {
            **_MAT_SHARED,
            "simple_query": _DS2 + "/version/{version}/table/{table_name}/query",
            "join_query": _DS2 + "/version/{version}/query",
            "annotations": _DS2 + "/version/{version}/table/{table_name}",
            "versions": _DS2 + "/versions",
            "version_metadata": _DS2 + "/version/{version}",
            "metadata": _DS2 + "/version/{version}/table/{table_name}/metadata",
            "versions_metadata": _DS2 + "/metadata",
            "segmentation_metadata": _DS2 + "/table/{table_name}/segmentation_metadata",
        },
        3: {
            **_MAT_SHARED,
            "simple_query": _DS3 + "/version/{version}/table/{table_name}/query",
            "join_query": _DS3 + "/version/{version}/query",
            "versions": _DS3 + "/versions",
            "version_metadata": _DS3 + "/version/{version}",
            "metadata": _DS3 + "/version/{version}/table/{table_name}/metadata",
            "all_tables_metadata": _DS3 + "/version/{version}/tables/metadata",
            "versions_metadata": _DS3 + "/metadata",
            "segmentation_metadata": _DS3 + "/table/{table_name}/segmentation_metadata",
            "get_views": _DS3 + "/version/{version}/views",
            "get_view_metadata": _DS3 + "/version/{version}/views/{view_name}/metadata",
            "view_query": _DS3 + "/version/{version}/views/{view_name}/query",
            "view_schema": _DS3 + "/version/{version}/views/{view_name}/schema",
            "view_schemas": _DS3 + "/version/{version}/views/schemas",
            "unique_string_values": _DS3 + "/table/{table_name}/unique_string_values",
            "neuroglancer_annotation_path": _DS3 + "/table/{table_name}/precomputed",
            "neuroglancer_segprop_path": _DS3 + "/version/{version}/table/{table_name}",
        },
    },
)

_NGL = "{json_server_address}/nglstate"
_NGL_V1 = _NGL + "/api/v1"
# The JSON state service lives on the global server. v0 is the legacy path without ``/api/v1``.
NGLSTATE = ServiceEndpoints(
    server_key="json_server_address",
    versions={
        0: {
            "upload_state": _NGL + "/post",
            "get_state": _NGL + "/{state_id}",
            "get_state_raw": _NGL + "/raw/{state_id}",
        },
        1: {
            "upload_state": _NGL_V1 + "/post",
            "upload_state_w_id": _NGL_V1 + "/post/{state_id}",
            "get_state": _NGL_V1 + "/{state_id}",
            "get_state_raw": _NGL_V1 + "/raw/{state_id}",
            "get_properties": _NGL_V1 + "/property/{state_id}/info",
            "upload_properties": _NGL_V1 + "/property/post",
            "upload_properties_w_id": _NGL_V1 + "/property/post/{state_id}",
            "get_properties_raw": _NGL_V1 + "/property/raw/{state_id}",
            "get_version": _NGL_V1 + "/version",
            "table_info": _NGL_V1 + "/table_info",
        },
    },
)

_MESH_V1 = "{cg_server_address}/meshing/api/v1/table/{table_id}"
# The meshing manifests Neuroglancer's graphene source and cloud-volume read; fragments are
# files under the graph's ``data_dir`` (``/volumes/{table_id}/ws/<mesh dir>/<fragment>``).
MESHING = ServiceEndpoints(
    server_key="cg_server_address",
    common={"get_version": "{cg_server_address}/meshing/api/version"},
    versions={
        1: {
            "manifest": _MESH_V1 + "/manifest/{node_id}:{lod}",
            "remeshing": _MESH_V1 + "/remeshing",
        }
    },
)

_SK = "{skeleton_server_address}/skeletoncache/api"
_SK_V1 = _SK + "/v1/{datastack_name}"
SKELETON = ServiceEndpoints(
    server_key="skeleton_server_address",
    common={
        "get_version": _SK + "/version",
        "get_versions": _SK + "/versions",
    },
    versions={
        1: {
            "skeleton_info": _SK_V1 + "/precomputed/skeleton/info",
            "bulk_skeleton_info": _SK_V1 + "/bulk/skeleton/info",
            "skeleton_info_versioned": _SK_V1 + "/precomputed/skeleton/{skeleton_version}/info",
            "get_refusal_list": _SK_V1 + "/precomputed/skeleton/get_refusal_list",
            "get_cache_contents_via_skvn_ridprefixes_limit": _SK_V1
            + "/precomputed/skeleton/query_cache/{skeleton_version}/{root_id_prefixes}/{limit}",
            "skeletons_exist_via_skvn_rids": _SK_V1 + "/precomputed/skeleton/exists/{skeleton_version}/{root_ids}",
            "skeletons_exist_via_skvn_rids_as_post": _SK_V1 + "/precomputed/skeleton/exists",
            "get_skeleton_via_rid": _SK_V1 + "/precomputed/skeleton/{root_id}",
            "get_skeleton_via_skvn_rid": _SK_V1 + "/precomputed/skeleton/{skeleton_version}/{root_id}",
            "get_skeleton_via_skvn_rid_fmt": _SK_V1
            + "/precomputed/skeleton/{skeleton_version}/{root_id}/{output_format}",
            "get_bulk_skeletons_via_skvn_rids": _SK_V1
            + "/bulk/get_skeletons/{skeleton_version}/{output_format}/{gen_missing_sks}/{root_ids}",
            "get_skeleton_async_via_skvn_rid": _SK_V1 + "/async/get_skeleton/{skeleton_version}/{root_id}",
            "get_skeleton_async_via_skvn_rid_fmt": _SK_V1
            + "/async/get_skeleton/{skeleton_version}/{root_id}/{output_format}",
            "gen_bulk_skeletons_via_skvn_rids": _SK_V1 + "/bulk/gen_skeletons/{skeleton_version}/{root_ids}",
            "gen_bulk_skeletons_via_skvn_rids_as_post": _SK_V1 + "/bulk/gen_skeletons",
            "get_cached_skeletons_bulk_as_post": _SK_V1
            + "/bulk/get_cached_skeletons/{skeleton_version}/{output_format}",
            "get_skeleton_token_as_post": _SK_V1 + "/bulk/get_skeleton_token/{skeleton_version}",
            "precomputed_info": _SK_V1 + "/precomputed/info",
        }
    },
)

_CONN_V1 = "{connectivity_server_address}/connectivity/api/v1/datastack/{datastack_name}"
# opencave's connectivity service (no CAVE counterpart): answers computed from a synapse table
CONNECTIVITY = ServiceEndpoints(
    server_key="connectivity_server_address",
    versions={
        1: {
            "edges": _CONN_V1 + "/edges",
            "adjacency": _CONN_V1 + "/adjacency",
            "partners": _CONN_V1 + "/partners",
            "common_partners": _CONN_V1 + "/common_partners",
            "cell_type_matrix": _CONN_V1 + "/cell_type_matrix",
            "paths": _CONN_V1 + "/paths",
            "diff": _CONN_V1 + "/diff",
        }
    },
)

_JOBS_V1 = "{jobs_server_address}/jobs/api/v1"
# opencave's queue of background work (no CAVE counterpart): versions, imports, skeletons
JOBS = ServiceEndpoints(
    server_key="jobs_server_address",
    versions={
        1: {
            "jobs": _JOBS_V1 + "/jobs",
            "job": _JOBS_V1 + "/jobs/{job_id}",
            "cancel": _JOBS_V1 + "/jobs/{job_id}/cancel",
        }
    },
)

# URL prefixes whose other URLs this server does not provide; they answer 501. Under
# ``/volumes`` only the watershed (``/volumes/{table_id}/ws/...``) exists: no image volume is
# generated.
PENDING_SERVICE_PREFIXES: dict[str, str] = {
    "/volumes": "volume service",
}

_PLACEHOLDER = re.compile(r"^\{[a-z0-9_]+_server_address\}")


def route_path(template: str) -> str:
    """The server-side route path of a template: the template without its server placeholder."""
    path, count = _PLACEHOLDER.subn("", template)
    if count != 1:
        raise ValueError(f"template does not start with a server placeholder: {template}")
    return path
