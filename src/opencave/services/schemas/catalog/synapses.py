"""Synapse schemas and the reference schemas that describe synapses (shape, compartment, validity)."""

from __future__ import annotations

from opencave.services.schemas.catalog.base import (
    ANNOTATION,
    BOUND_SPATIAL_POINT,
    REFERENCE_ANNOTATION,
    SPATIAL_POINT,
)
from opencave.services.schemas.fields import boolean, floating, integer, point, string
from opencave.services.schemas.model import Field
from opencave.services.schemas.rules import DistinctRoots

SIZE = floating("size", "size of synapse")

# Abstract base (not registered): pre/post points and the "different roots" validity rule.
# The `order` metadata is meaningless but upstream serves it in the JSON Schema.
BASE_SYNAPSE = ANNOTATION.extend(
    "BaseSynapseSchema",
    point(
        "pre_pt",
        BOUND_SPATIAL_POINT,
        "a nearby point located in the presynaptic compartment of the synapse",
        required=True,
        extras={"order": 0},
    ),
    point(
        "post_pt",
        BOUND_SPATIAL_POINT,
        "a nearby point located in the postsynaptic compartment of the synapse",
        required=True,
        extras={"order": 2},
    ),
    valid_rule=DistinctRoots("pre_pt", "post_pt"),
)

NO_CLEFT_SYNAPSE = BASE_SYNAPSE.extend(
    "NoCleftSynapse",
    floating("score", "synapse score (see table metadata for description of score)"),
)

SYNAPSE = BASE_SYNAPSE.extend(
    "SynapseSchema",
    point("ctr_pt", SPATIAL_POINT, "central point", required=True, extras={"order": 1}),
    SIZE,
)

NO_CENTER_SYNAPSE = BASE_SYNAPSE.extend("NoCenterSynapse", SIZE)

BUHMANN_SYNAPSE = BASE_SYNAPSE.extend(
    "BuhmannSynapseSchema",
    floating("connection_score", "score assigned by Buhmann et al. 2019"),
    floating(
        "cleft_score",
        "score derived by Buhmann et al. 2019 by combining their synapses with the synapse "
        "segmentation from Heinrich et al. 2018",
    ),
)


def _nt(name: str, transmitter: str) -> Field:
    return floating(name, f"{transmitter} probability by Eckstein et al. 2020")


BUHMANN_ECKSTEIN_SYNAPSE = BUHMANN_SYNAPSE.extend(
    "BuhmannEcksteinSynapseSchema",
    _nt("gaba", "Gaba"),
    _nt("ach", "Acetylcholine"),
    _nt("glut", "Glutamate"),
    _nt("oct", "Octopamine"),
    _nt("ser", "Serotonin"),
    _nt("da", "Dopamine"),
    boolean("valid_nt", "False = no neurotransmitter prediction available."),
)

PLASTIC_SYNAPSE = SYNAPSE.extend(
    "PlasticSynapse",
    integer(
        "plasticity",
        "plasticity state 0:not synapse 1:normal 2:mild 3:strong 4:not rated",
        required=True,
        choices=(0, 1, 2, 3, 4),
    ),
)

VALID_SYNAPSE = REFERENCE_ANNOTATION.extend(
    "ValidSynapse",
    boolean("is_valid", "Valid annotation for synapses", required=True),
)

BOUTON_SHAPE = REFERENCE_ANNOTATION.extend(
    "BoutonShape",
    string(
        "shape",
        "first example of description of a bouton shape",
        required=True,
        choices=("pancake", "basmati", "potato"),
    ),
)

PRESYNAPTIC_BOUTON_TYPE = REFERENCE_ANNOTATION.extend(
    "PresynapticBoutonType",
    string(
        "bouton_type",
        "Presynaptic type based on bouton",
        required=True,
        choices=("pancake", "basmati", "potato", "sst", "vertical", "vip", "ivy", "clutch", "chandelier"),
    ),
)

# Upstream's description contains a backslash line continuation, leaving a run of spaces.
POSTSYNAPTIC_COMPARTMENT = REFERENCE_ANNOTATION.extend(
    "PostsynapticCompartment",
    string(
        "compartment",
        "Compartment of the postsynaptic neuron " + " " * 22 + "targeted by the synapse",
        required=True,
        choices=("soma", "dendrite", "axon"),
    ),
    boolean("on_spine", "Boolean representing if the synapse is onto a spine or not"),
    string(
        "dendrite_class",
        "Type of dendritic branch, e.g. basal or apical",
        choices=("basal", "apical"),
    ),
)

SPINE_WITH_INFO = ANNOTATION.extend(
    "SpineWithInfo",
    point(
        "pt",
        BOUND_SPATIAL_POINT,
        "Spatial point representing the location of the spine",
        required=True,
    ),
    floating("volume", "Estimated volume of the spine"),
    integer("n_inputs", "Number of synaptic inputs (unique root IDs) onto the spine"),
)
