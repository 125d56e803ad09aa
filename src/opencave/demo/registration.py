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


def register_demo(access: Access, info: InfoRegistry, viewer_site: str) -> None:
    """Idempotent: parts that exist already (from an interrupted earlier run) are kept."""
    with suppress(Conflict):
        access.create_dataset(DEMO_DATASET)
    with suppress(Conflict):
        info.add_aligned_volume(
            DEMO_ALIGNED_VOLUME,
            image_source="precomputed://{local_server}/volumes/" + DEMO_ALIGNED_VOLUME + "/image",
            description="Synthetic volume of the opencave demo datastack.",
            display_name="opencave demo",
        )
    with suppress(Conflict):
        info.add_datastack(
            DEMO_DATASTACK,
            DEMO_ALIGNED_VOLUME,
            display_name="opencave demo",
            description="Synthetic connectome for trying opencave: neurons, synapses, cell types, proofreading.",
            segmentation_source="graphene://{local_server}/segmentation/table/" + DEMO_GRAPH_TABLE,
            skeleton_source="precomputed://{local_server}/skeletoncache/api/v1/"
            + DEMO_DATASTACK
            + "/precomputed/skeleton/",
            viewer_site=viewer_site,
            synapse_table="synapses",
            soma_table="nucleus_detection",
            proofreading_status_table="proofreading_status",
            cell_identification_table="cell_types",
            viewer_resolution_x=4.0,
            viewer_resolution_y=4.0,
            viewer_resolution_z=40.0,
        )
    access.map_resource("datastack", DEMO_DATASTACK, DEMO_DATASET)
    access.map_resource("aligned_volume", DEMO_ALIGNED_VOLUME, DEMO_DATASET)
    access.map_resource("pychunkedgraph", DEMO_GRAPH_TABLE, DEMO_DATASET)
    for permission in ("view", "edit"):
        access.grant(DEFAULT_GROUP, DEMO_DATASET, permission)
