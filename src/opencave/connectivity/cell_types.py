"""Cell type x cell type aggregates of the connections between typed roots."""

from __future__ import annotations

import numpy as np
import pandas as pd

from opencave.connectivity.frames import (
    POST,
    PRE,
    answer_attrs,
    check_min_synapses,
    check_synapses,
    connections,
    require_columns,
    root_array,
)

LONG_COLUMNS = [
    "pre_type", "post_type", "n_synapses", "size_sum", "n_connections", "n_pre_neurons", "n_post_neurons",
    "synapses_per_pre_neuron", "synapses_per_post_neuron",
]


def root_types(cell_types: pd.DataFrame, column: str = "cell_type", root_column: str = "pt_root_id") -> tuple[pd.Series, int]:
    """(type of each typed root, as a Series indexed by root and ordered by it; number of ambiguous roots).

    Rows with root 0 or a null type are dropped; a root whose rows give several distinct types
    is ambiguous and left untyped.
    """
    require_columns(
        cell_types,
        (root_column, column),
        "cell_types",
        f"pass a cell-type table's rows with the root in {root_column!r} and the type in {column!r} "
        "(resolve a reference table first, e.g. caveclient's query_table(..., merge_reference=True))",
    )
    roots = root_array(cell_types[root_column])
    types = cell_types[column].astype(object).to_numpy()
    keep = (roots != 0) & ~pd.isna(types)
    pairs = pd.DataFrame({"root": roots[keep], "type": types[keep]}).drop_duplicates()
    n_types = pairs.groupby("root", sort=False)["type"].transform("size").to_numpy()
    typed = pairs[n_types == 1]
    series = pd.Series(typed["type"].to_numpy(), index=pd.Index(typed["root"].to_numpy(), dtype="int64"), dtype=object)
    return series.sort_index(), int(pairs.loc[n_types > 1, "root"].nunique())


def cell_type_matrix(
    synapses: pd.DataFrame,
    cell_types: pd.DataFrame,
    column: str = "cell_type",
    root_column: str = "pt_root_id",
    min_synapses: int = 1,
    long: bool = False,
) -> pd.DataFrame:
    """Synapse counts from each cell type (rows, ``pre_type``) to each (columns, ``post_type``).

    Connections (at least ``min_synapses``) whose two roots are typed count; a root is typed
    when its rows in ``cell_types`` give exactly one non-null type. Rows and columns are every
    type of a typed root, sorted; ``attrs["neurons"]`` = {type: typed roots},
    ``attrs["n_ambiguous"]`` = roots with several types. With ``long=True``: one row per
    (pre_type, post_type) pair with n_synapses, size_sum, n_connections (root pairs),
    n_pre_neurons and n_post_neurons (distinct roots), and synapses_per_pre_neuron /
    synapses_per_post_neuron (n_synapses over every typed neuron of the pre / post type),
    ordered by pre_type then post_type.
    """
    check_synapses(synapses)
    min_synapses = check_min_synapses(min_synapses)
    typed, n_ambiguous = root_types(cell_types, column, root_column)
    roots = typed.index.to_numpy()
    conns = connections(synapses, min_synapses, roots, roots)
    conns["pre_type"] = typed.reindex(conns[PRE].to_numpy()).to_numpy()
    conns["post_type"] = typed.reindex(conns[POST].to_numpy()).to_numpy()
    aggregate = (
        conns.groupby(["pre_type", "post_type"], sort=True)
        .agg(
            n_synapses=("n_synapses", "sum"),
            size_sum=("size_sum", lambda s: s.sum(min_count=1)),
            n_connections=("n_synapses", "size"),
            n_pre_neurons=(PRE, "nunique"),
            n_post_neurons=(POST, "nunique"),
        )
        .reset_index()
    )
    per_type = typed.value_counts(sort=False)
    aggregate["synapses_per_pre_neuron"] = aggregate["n_synapses"] / per_type.reindex(aggregate["pre_type"]).to_numpy()
    aggregate["synapses_per_post_neuron"] = aggregate["n_synapses"] / per_type.reindex(aggregate["post_type"]).to_numpy()
    long_form = pd.DataFrame(
        {
            name: aggregate[name].to_numpy().astype(
                object if name.endswith("_type") else "float64" if name == "size_sum" or name.startswith("synapses_per") else "int64"
            )
            for name in LONG_COLUMNS
        }
    )
    order = sorted(per_type.index)
    neurons = {cell_type: int(per_type[cell_type]) for cell_type in order}
    if long:
        result = long_form
    else:
        types = pd.Index(order, dtype=object)
        cells = np.zeros((len(order), len(order)), dtype=np.int64)
        cells[types.get_indexer(long_form["pre_type"]), types.get_indexer(long_form["post_type"])] = long_form["n_synapses"].to_numpy()
        result = pd.DataFrame(
            cells,
            index=pd.Index(order, dtype=object, name="pre_type"),
            columns=pd.Index(order, dtype=object, name="post_type"),
        )
    result.attrs = answer_attrs(synapses, min_synapses)
    result.attrs["neurons"] = neurons
    result.attrs["n_ambiguous"] = n_ambiguous
    return result
