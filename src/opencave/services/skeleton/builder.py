"""Builds the canonical skeleton of a root from its L2 graph (and soma, when known)."""

from __future__ import annotations

import numpy as np

from opencave.wire.skeletons import LATEST_SKELETON_VERSION, SK_DICT_STRUCTURE_VERSION

from .inputs import RootGraph
from .model import GENERATOR, Skeleton
from .properties import compartments, effective_radius
from .soma import Soma
from .teasar import skeletonize_graph

SKELETON_TYPE = "pcg_skel"


def build_skeleton(graph: RootGraph, datastack: str, invalidation_d: float, soma: Soma | None) -> Skeleton:
    """TEASAR over the L2 graph, rooted at (and collapsed into) the soma when there is one."""
    soma_nm = soma.position_nm if soma is not None else None
    collapse_radius = soma.collapse_radius(invalidation_d) if soma is not None else invalidation_d
    sk = skeletonize_graph(graph.vertices, graph.edges, invalidation_d, soma_pt=soma_nm, collapse_radius=collapse_radius)
    radius = effective_radius(sk.vertices, sk.edges, sk.root, sk.mesh_to_skel_map, graph.sizes)
    compartment = compartments(len(sk.vertices), sk.root, soma_nm is not None)
    soma_pt = [float(v) for v in soma_nm] if soma_nm is not None else [None, None, None]
    meta = {
        "root_id": int(graph.root_id),
        "skeleton_version": LATEST_SKELETON_VERSION,
        "sk_dict_structure_version": SK_DICT_STRUCTURE_VERSION,
        "soma_pt_x": soma_pt[0],
        "soma_pt_y": soma_pt[1],
        "soma_pt_z": soma_pt[2],
        "soma_radius": float(collapse_radius),
        "collapse_soma": soma_nm is not None,
        "collapse_function": "sphere",
        "invalidation_d": float(invalidation_d),
        "smooth_vertices": False,
        "compute_radius": False,
        "shape_function": "single",
        "smooth_iterations": 12,
        "smooth_neighborhood": 2,
        "smooth_r": 0.1,
        "cc_vertex_thresh": 0,
        "remove_zero_length_edges": True,
        "collapse_params": {},
        "timestamp": float(graph.timestamp),
        "skeleton_type": SKELETON_TYPE,
        "meta": {"datastack": datastack, "space": "l2cache"},
        "generator": GENERATOR,
        "n_lvl2_ids": int(len(graph.l2_ids)),
        "filled_positions": int(graph.filled),
    }
    return Skeleton(
        root_id=int(graph.root_id),
        datastack=datastack,
        vertices=sk.vertices,
        edges=sk.edges,
        root=sk.root,
        radius=radius,
        compartment=compartment,
        mesh_to_skel_map=sk.mesh_to_skel_map,
        lvl2_ids=graph.l2_ids.astype(np.uint64),
        mesh_index=sk.mesh_index,
        meta=meta,
    )
