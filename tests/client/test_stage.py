"""``StagedAnnotations`` on its own (caveclient-spec §10.1), and against caveclient's."""

from __future__ import annotations

import warnings

import jsonschema
import numpy as np
import pandas as pd
import pytest

from opencave.client.stage import StagedAnnotations

SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "definitions": {
        "BoundSpatialPoint": {
            "type": "object",
            "properties": {
                "position": {"type": "array", "items": {"type": "integer"}},
                "root_id": {"type": "integer"},
                "supervoxel_id": {"type": "integer"},
            },
            "required": ["position"],
            "additionalProperties": False,
        },
        "SpatialPoint": {"type": "object", "properties": {"position": {"type": "array"}}, "required": ["position"]},
        "CellTypeLocal": {
            "type": "object",
            "properties": {
                "cell_type": {"type": "string"},
                "classification_system": {"type": "string"},
                "pt": {"type": "object", "$ref": "#/definitions/BoundSpatialPoint"},
                "bb": {"type": "object", "$ref": "#/definitions/SpatialPoint"},
                "score": {"type": "number"},
            },
            "required": ["cell_type", "classification_system", "pt"],
            "additionalProperties": True,
        },
    },
    "$ref": "#/definitions/CellTypeLocal",
}


def make(update: bool = False, **kwargs) -> StagedAnnotations:
    return StagedAnnotations(SCHEMA, update=update, table_name="test_table", **kwargs)


def add_two(stage: StagedAnnotations) -> None:
    stage.add(cell_type="A", classification_system="X", pt_position=[1, 2, 3])
    stage.add(cell_type="B", classification_system="Y", pt_position=[4, 5, 6], score=0.5)


def test_fields_and_the_add_class():
    stage = make()
    assert stage.name == "CellTypeLocal"
    assert stage.fields == ["cell_type", "classification_system", "pt_position", "bb_position", "score"]
    assert stage.fields_required == ["cell_type", "classification_system", "pt_position"]
    assert stage.add.__name__ == "CellTypeLocal"
    assert "does not upload" in stage.add.__doc__
    anno = stage.add("A", "X", [1, 2, 3])  # positional, required fields first
    assert anno.cell_type == "A" and anno.score is None
    assert getattr(anno, stage.IS_UPLOADED_FIELD) is False and getattr(anno, stage.UPLOADED_ID_FIELD) is None
    update = make(update=True)
    assert update.fields[0] == "id" and update.fields_required[0] == "id" and update.is_update


def test_nested_form_and_validation():
    stage = make()
    stage.add(cell_type="A", classification_system="X", pt_position=np.array([1, 2, 3]), bb_position=[0, 0, 0])
    assert stage.annotation_list == [
        {"cell_type": "A", "classification_system": "X", "pt": {"position": [1, 2, 3]}, "bb": {"position": [0, 0, 0]}}
    ]
    assert type(stage.annotation_list[0]["pt"]["position"][0]) is int  # numpy made plain
    with pytest.raises(jsonschema.ValidationError):
        stage.add(cell_type="A", classification_system="X", pt_position=32)
    with pytest.raises(jsonschema.ValidationError):
        stage.add(cell_type=5, classification_system="X", pt_position=[1, 2, 3])
    assert len(stage) == 1


def test_update_ids_must_be_integers():
    stage = make(update=True)
    with pytest.raises(TypeError):
        stage.add(cell_type="A", classification_system="X", pt_position=[1, 2, 3])
    with pytest.raises(jsonschema.ValidationError, match='"id" field must be an integer.'):
        stage.add(id="7", cell_type="A", classification_system="X", pt_position=[1, 2, 3])
    stage.add(id=np.int64(7), cell_type="A", classification_system="X", pt_position=[1, 2, 3])  # caveclient refuses
    assert stage.annotation_list[0]["id"] == 7


def test_scaling_and_its_warning():
    stage = make(table_resolution=[4, 4, 40], annotation_resolution=[8, 8, 40])
    stage.add(cell_type="A", classification_system="X", pt_position=[1, 2, 3])
    assert stage.annotation_list[0]["pt"]["position"] == [2.0, 4.0, 3.0]
    with pytest.warns(UserWarning, match="No table resolution set"):
        make(annotation_resolution=[1, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(table_resolution=[4, 4, 40])


def test_schema_without_required_list():
    schema = {**SCHEMA, "definitions": {**SCHEMA["definitions"]}}
    schema["definitions"]["CellTypeLocal"] = {
        k: v for k, v in SCHEMA["definitions"]["CellTypeLocal"].items() if k != "required"
    }
    stage = StagedAnnotations(schema)
    assert stage.fields_required == []
    stage.add(cell_type="A")
    assert stage.annotation_list == [{"cell_type": "A"}]


def test_add_dataframe_checks_columns():
    stage = make()
    stage.add_dataframe(pd.DataFrame({"cell_type": ["A"], "classification_system": ["X"], "pt_position": [[1, 2, 3]]}))
    assert len(stage) == 1
    with pytest.raises(ValueError, match=r"Schema needs columns not in dataframe: \['pt_position'\]\.$"):
        stage.add_dataframe(pd.DataFrame({"cell_type": ["A"], "classification_system": ["X"]}))
    with pytest.raises(ValueError, match=r"Dataframe has columns that are not in schema:  \['extra'\]"):
        stage.add_dataframe(
            pd.DataFrame({"cell_type": ["A"], "classification_system": ["X"], "pt_position": [[1, 2, 3]], "extra": [1]})
        )
    with pytest.raises(ValueError, match="and dataframe has columns that do not match fields"):
        stage.add_dataframe(pd.DataFrame({"cell_type": ["A"], "extra": [1]}))


def test_batches_skip_uploaded():
    stage = make()
    assert stage._annotation_batches(batch_size=10) == []
    add_two(stage)
    stage.add(cell_type="C", classification_system="Z", pt_position=[7, 8, 9])
    setattr(stage._anno_list[0], stage.IS_UPLOADED_FIELD, True)
    batches = stage._annotation_batches(batch_size=1)
    assert batches == [[stage._anno_list[1]], [stage._anno_list[2]]]


def test_apply_upload_results():
    stage = make()
    add_two(stage)
    with pytest.raises(AssertionError):
        stage._apply_upload_result(list(stage._anno_list), [10])
    stage._apply_upload_result(list(stage._anno_list), [10, 11])
    assert [getattr(a, stage.UPLOADED_ID_FIELD) for a in stage._anno_list] == [10, 11]
    update = make(update=True)
    update.add(id=1000, cell_type="A", classification_system="X", pt_position=[1, 2, 3])
    update.add(id=2000, cell_type="B", classification_system="Y", pt_position=[4, 5, 6])
    update._apply_upload_result(list(update._anno_list), {"2000": 2001, "1000": 1001})
    assert [getattr(a, update.UPLOADED_ID_FIELD) for a in update._anno_list] == [1001, 2001]


def test_annotation_dataframe():
    stage = make()
    assert stage.annotation_dataframe().empty and stage.annotation_dataframe(include_tracking=True).empty
    add_two(stage)
    df = stage.annotation_dataframe()
    assert list(df.columns) == ["cell_type", "classification_system", "pt_position", "score"]
    assert df.loc[0, "pt_position"] == [1, 2, 3] and pd.isna(df.loc[0, "score"])
    setattr(stage._anno_list[0], stage.IS_UPLOADED_FIELD, True)
    setattr(stage._anno_list[0], stage.UPLOADED_ID_FIELD, 42)
    tracked = stage.annotation_dataframe(include_tracking=True)
    assert list(tracked["is_uploaded"]) == [True, False]
    assert tracked["new_id"].dtype == "Int64" and tracked["new_id"].iloc[0] == 42 and pd.isna(tracked["new_id"].iloc[1])
    assert stage.annotation_dataframe(only_nonuploaded=True)["cell_type"].tolist() == ["B"]


def test_repr_clear_and_purge():
    stage = make()
    add_two(stage)
    setattr(stage._anno_list[0], stage.IS_UPLOADED_FIELD, True)
    assert repr(stage) == "Staged annotations for table 'test_table' (2 new annotations, 1 uploaded)"
    stage.purge_uploaded_annotations()
    assert len(stage) == 1 and stage.annotation_list_nonuploaded == stage.annotation_list
    stage.clear_annotations()
    assert len(stage) == 0
    schema_only = StagedAnnotations(SCHEMA, update=True)
    assert (
        repr(schema_only)
        == "Staged annotations for schema 'CellTypeLocal' with no table (0 updated annotations, 0 uploaded)"
    )
    schema_only.table_name = "t"
    assert schema_only.table_name == "t"


def test_same_results_as_caveclient():
    stage_module = pytest.importorskip("caveclient.tools.stage")
    ours = StagedAnnotations(SCHEMA, update=True, table_resolution=[4, 4, 40], annotation_resolution=[2, 2, 40])
    theirs = stage_module.StagedAnnotations(
        SCHEMA, update=True, table_resolution=[4, 4, 40], annotation_resolution=[2, 2, 40]
    )
    for stage in (ours, theirs):
        stage.add(id=1, cell_type="A", classification_system="X", pt_position=[2, 4, 6], bb_position=[0, 0, 0])
        stage.add_dataframe(
            pd.DataFrame({"id": [2], "cell_type": ["B"], "classification_system": ["Y"], "pt_position": [[8, 8, 8]]})
        )
        stage._apply_upload_result(stage._anno_list[:1], {"1": 11})
    assert ours.fields == theirs.fields and ours.fields_required == theirs.fields_required
    assert ours.annotation_list == theirs.annotation_list
    assert ours.annotation_list_nonuploaded == theirs.annotation_list_nonuploaded
    assert repr(ours) == repr(theirs)
    for kwargs in ({}, {"include_tracking": True}, {"only_nonuploaded": True}):
        pd.testing.assert_frame_equal(ours.annotation_dataframe(**kwargs), theirs.annotation_dataframe(**kwargs))
