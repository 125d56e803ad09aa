"""The schema type registry: name -> schema class, in upstream's order (``GET /schema/api/v2/type``)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from opencave.errors import NotFound
from opencave.services.schemas.catalog import (
    base,
    cells,
    functional,
    matching,
    proofreading,
    references,
    spatial,
    synapses,
    tags,
)
from opencave.services.schemas.model import SchemaDef

REGISTRY: MappingProxyType[str, SchemaDef] = MappingProxyType(
    {
        "synapse": synapses.SYNAPSE,
        "nocleft_synapse": synapses.NO_CLEFT_SYNAPSE,
        "nocenter_synapse": synapses.NO_CENTER_SYNAPSE,
        "fly_synapse": synapses.BUHMANN_SYNAPSE,
        "fly_nt_synapse": synapses.BUHMANN_ECKSTEIN_SYNAPSE,
        "bouton_shape": synapses.BOUTON_SHAPE,
        "presynaptic_bouton_type": synapses.PRESYNAPTIC_BOUTON_TYPE,
        "postsynaptic_compartment": synapses.POSTSYNAPTIC_COMPARTMENT,
        "spine_with_info": synapses.SPINE_WITH_INFO,
        "microns_func_coreg": functional.FUNCTIONAL_COREGISTRATION,
        "microns_func_unit_coreg": functional.FUNCTIONAL_UNIT_COREGISTRATION,
        "v1dd_func_unit_coreg": functional.V1DD_FUNCTIONAL_UNIT_COREGISTRATION,
        "func_unit_ext_coreg": functional.FUNCTIONAL_UNIT_COREGISTRATION_EXTENDED,
        "func_properties_bcm": functional.FUNCTIONAL_PROPERTIES_BCM,
        "simple_reference": base.REFERENCE_ANNOTATION,
        "reference_tag": base.REFERENCE_TAG_ANNOTATION,
        "cell_type_local": cells.CELL_TYPE_LOCAL,
        "cell_type_reference": cells.CELL_TYPE_REFERENCE,
        "cell_type_reference_user": cells.CELL_TYPE_REFERENCE_USER,
        "nucleus_detection": spatial.NUCLEUS_DETECTION,
        "bound_tag": tags.BOUND_TAG,
        "bound_double_tag": tags.BOUND_DOUBLE_TAG,
        "bound_2tag": tags.BOUND_2TAG,
        "bound_tag_user": tags.BOUND_TAG_USER,
        "bound_double_tag_user": tags.BOUND_DOUBLE_TAG_USER,
        "bound_2tag_user": tags.BOUND_2TAG_USER,
        "extended_classical_cell_type": cells.EXTENDED_CLASSICAL_CELL_TYPE,
        "plastic_synapse": synapses.PLASTIC_SYNAPSE,
        "glia_contact": spatial.GLIA_CONTACT,
        "contact": spatial.CONTACT,
        "derived_spatial_point": base.DERIVED_SPATIAL_POINT,
        "derived_tag": spatial.DERIVED_TAG,
        "derived_numeric_value": spatial.DERIVED_NUMERIC,
        "proofread_status": proofreading.PROOFREAD_STATUS,
        "compartment_proofread_status": proofreading.COMPARTMENT_PROOFREAD_STATUS,
        "proofreading_boolstatus_user": proofreading.PROOFREADING_BOOL_STATUS_USER,
        "fly_neuropil": references.FLY_NEUROPIL,
        "reference_point": references.FLAT_SEGMENTATION_REFERENCE_SINGLE_POINT,
        "representative_point": base.REPRESENTATIVE_POINT,
        "reference_synapse_valid": synapses.VALID_SYNAPSE,
        "reference_simple_group": references.SIMPLE_GROUP,
        "reference_simple_group_indexed": references.SIMPLE_GROUP_INDEXED,
        "fly_cell_type": cells.FLY_CELL_TYPE,
        "fly_cell_type_ext": cells.FLY_CELL_TYPE_EXT,
        "braincircuits_annotation_user": tags.BRAINCIRCUITS_BOUND_TAG_USER,
        "bound_tag_bool": tags.BOUND_BOOL,
        "bound_tag_bool_valid": tags.BOUND_BOOL_WITH_VALID,
        "bound_tag_valid": tags.BOUND_TAG_WITH_VALID,
        "pt_bool_valid": tags.SPATIAL_POINT_BOOL_WITH_VALID,
        "reference_integer": references.REFERENCE_INTEGER,
        "reference_tag_float": references.REFERENCE_TAG_FLOAT,
        "compartment_proofread_status_strategy": proofreading.COMPARTMENT_PROOFREAD_STATUS_STRATEGY,
        "reference_tag_with_confidence": references.REFERENCE_TAG_WITH_CONFIDENCE,
        "digital_twin_properties": functional.DIGITAL_TWIN_PROPERTIES_BCM,
        "cell_match": matching.CELL_MATCH,
        "cell_similarity": matching.CELL_SIMILARITY,
        "cell_match_reference": matching.CELL_MATCH_REFERENCE,
    }
)


def schema_names() -> list[str]:
    """All registered schema names, in registry order."""
    return list(REGISTRY)


def get_schema(name: str) -> SchemaDef:
    """The schema class registered under ``name``; ``NotFound`` (unknown_schema) otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise NotFound(
            f"Schema type {name!r} is not a known annotation type. "
            "GET /schema/api/v2/type lists the valid schema names.",
            code="unknown_schema",
            data={"schema_type": name},
        ) from None


def apply_valid_rule(name: str, item: dict[str, Any]) -> dict[str, Any]:
    """A copy of a (nested) payload with ``valid`` set as upstream's load hooks would set it.

    Schemas without a rule return the payload unchanged (copied).
    """
    rule = get_schema(name).valid_rule
    return rule.apply(item) if rule is not None else dict(item)
