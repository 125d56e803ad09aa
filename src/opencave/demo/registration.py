"""Registers the demo datastack: its dataset, aligned volume, datastack record and grants.

Everyone with an account (the ``default`` group) may view and edit the demo, so a new local
user can follow the set-up guides straight away.
"""

from __future__ import annotations

from contextlib import suppress

from opencave.errors import Conflict
from opencave.services.auth import DEFAULT_GROUP, Access
from opencave.services.info import InfoRegistry

DEMO_DATASTACK = "opencave_demo"
DEMO_DATASET = "opencave_demo"
DEMO_ALIGNED_VOLUME = "opencave_demo"
DEMO_GRAPH_TABLE = "opencave_demo"


def register_demo(access: Access, info: InfoRegistry, viewer_site: str, name: str = DEMO_DATASTACK) -> None:
    """Register a synthetic datastack ``name`` (its dataset, aligned volume and chunkedgraph
    table share the name). Idempotent: parts that exist already are kept."""
    with suppress(Conflict):
        access.create_dataset(name)
    with suppress(Conflict):
        info.add_aligned_volume(
            name,
            image_source="precomputed://{local_server}/volumes/" + name + "/image",
            description="Synthetic volume of the opencave demo datastack.",
            display_name=name.replace("_", " "),
        )
    with suppress(Conflict):
        info.add_datastack(
            name,
            name,
            display_name=name.replace("_", " "),
            description="Synthetic connectome for trying opencave: neurons, synapses, cell types, proofreading.",
            segmentation_source="graphene://{local_server}/segmentation/table/" + name,
            skeleton_source="precomputed://{local_server}/skeletoncache/api/v1/" + name + "/precomputed/skeleton/",
            viewer_site=viewer_site,
            synapse_table="synapses",
            soma_table="nucleus_detection",
            proofreading_status_table="proofreading_status",
            cell_identification_table="cell_types",
            viewer_resolution_x=4.0,
            viewer_resolution_y=4.0,
            viewer_resolution_z=40.0,
        )
    access.map_resource("datastack", name, name)
    access.map_resource("aligned_volume", name, name)
    access.map_resource("pychunkedgraph", name, name)
    for permission in ("view", "edit"):
        access.grant(DEFAULT_GROUP, name, permission)
