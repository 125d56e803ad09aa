"""Connectivity computed client-side from synapse DataFrames, for any CAVE deployment.

The functions take the rows of a synapse table (``pre_pt_root_id``, ``post_pt_root_id``,
optional ``size``; e.g. from ``query_table`` or ``live_query``) or connection rows as
``edges`` returns them (with ``n_synapses`` and ``size_sum``), and compute what opencave's
connectivity service answers: rows with root 0 are ignored, synapses are reduced to connections
(ordered root pairs) and pairs below ``min_synapses`` dropped before anything else. They need
only pandas, numpy and scipy.

    import opencave.connectivity as oc
    syn = client.materialize.query_table("synapses_pni_2", filter_in_dict={"post_pt_root_id": roots})
    oc.partners(syn, roots, direction="input", min_synapses=3)
"""

from opencave.connectivity.cell_types import cell_type_matrix, root_types
from opencave.connectivity.lineage_diff import diff
from opencave.connectivity.pairs import adjacency, common_partners, edges, partners
from opencave.connectivity.path_search import paths

__all__ = ["adjacency", "cell_type_matrix", "common_partners", "diff", "edges", "partners", "paths", "root_types"]
