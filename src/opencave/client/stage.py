"""``StagedAnnotations``: build annotations for a table locally, checked against the table's
JSON schema as they are added, then upload them with
``client.annotation.upload_staged_annotations`` (caveclient's ``tools.stage``).

Points are given flat as ``<point>_position=[x, y, z]`` and sent nested as
``{"<point>": {"position": [x, y, z]}}``; with both resolutions known, coordinates are scaled
from ``annotation_resolution`` to ``table_resolution``. Each staged annotation remembers
whether it was uploaded and its new id, so an interrupted upload resumes where it stopped.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import attrs
import jsonschema
import numpy as np
import pandas as pd

SPATIAL_POINT_CLASSES = ["SpatialPoint", "BoundSpatialPoint"]

ADD_FUNC_DOCSTRING = "Add annotation to a local collection. Note that this does not upload annotations."


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as Python lists and numbers (JSON Schema knows no numpy)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


class StagedAnnotations:
    """Annotations staged for one table (or schema), validated on ``add``.

    Parameters
    ----------
    schema
        The JSON schema of the annotation type (``client.schema.schema_definition(...)``).
    name
        Name of the generated ``add`` class; default the schema's main class.
    update
        Stage updates of existing annotations: every annotation needs its ``id``.
    id_field
        Let annotations carry an ``id`` (implied by ``update``).
    table_resolution, annotation_resolution
        nm per voxel of the table and of the coordinates given to ``add``; with both,
        coordinates are scaled to the table's.
    table_name
        The table to upload to (may be set later).

    Differences from caveclient: a schema without a ``required`` list works, numpy ids and
    coordinates are accepted (caveclient's ``id`` check rejects numpy integers, and numpy
    coordinates fail integer schemas), and coordinates are stored as plain numbers.
    """

    IS_UPLOADED_FIELD = "_IS_UPLOADED_"
    UPLOADED_ID_FIELD = "_UPLOADED_ID_"
    IS_UPLOADED_COLUMN = "is_uploaded"
    NEW_ID_COLUMN = "new_id"

    def __init__(
        self,
        schema: dict[str, Any],
        name: str | None = None,
        update: bool = False,
        id_field: bool = False,
        table_resolution: Sequence[float] | None = None,
        annotation_resolution: Sequence[float] | None = None,
        table_name: str | None = None,
    ):
        self._schema = schema
        self._update = update
        self._id_field = id_field or update
        self._table_name = table_name
        self._ref_class = schema["$ref"].split("/")[-1]
        self._table_resolution = table_resolution
        self._annotation_resolution = annotation_resolution
        self._anno_scaling: list[float] | None = None
        if table_resolution is not None and annotation_resolution is not None:
            self._anno_scaling = [a / t for t, a in zip(table_resolution, annotation_resolution)]
        elif annotation_resolution is not None:
            warnings.warn("No table resolution set. Coordinates cannot be scaled automatically.", stacklevel=2)
        self.name = self._ref_class if name is None else name

        definition = schema["definitions"][self._ref_class]
        self._required_props: list[str] = list(definition.get("required") or [])
        self._props: list[str] = list(definition["properties"])
        # "<point>_position" (the flat name users give) -> "<point>" (the schema property)
        self._convert_pts: dict[str, str] = {}
        for prop, spec in definition["properties"].items():
            if spec.get("$ref", "").split("/")[-1] in SPATIAL_POINT_CLASSES:
                self._convert_pts[f"{prop}_position"] = prop
        self._anno_list: list[Any] = []
        self.add = self._make_anno_class()
        self.add.__doc__ = ADD_FUNC_DOCSTRING

    # -- the generated annotation class --------------------------------------------------

    def _flat_name(self, prop: str) -> str:
        return f"{prop}_position" if f"{prop}_position" in self._convert_pts else prop

    def _make_anno_class(self) -> type:
        """An attrs class: ``id`` (with id_field), required fields, optional fields (default
        None), then the upload tracking fields. Creating an instance validates and stages it."""
        fields: dict[str, Any] = {}
        if self._id_field:
            fields["id"] = attrs.field()
        for prop in self._props:
            if prop in self._required_props:
                fields[self._flat_name(prop)] = attrs.field()
        for prop in self._props:
            if prop not in self._required_props:
                fields[self._flat_name(prop)] = attrs.field(default=None)
        fields[self.IS_UPLOADED_FIELD] = attrs.field(default=False)
        fields[self.UPLOADED_ID_FIELD] = attrs.field(default=None)

        stage = self

        class AddAndValidate:
            def __attrs_post_init__(self) -> None:
                stage._validate(self)
                stage._anno_list.append(self)

        return attrs.make_class(self.name, fields, bases=(AddAndValidate,))

    def _validate(self, anno: Any) -> None:
        annotation = self._process_annotation(anno)
        jsonschema.validate(annotation, self._schema)
        if self._id_field:
            anno_id = annotation.get("id")
            if not isinstance(anno_id, numbers.Integral) or isinstance(anno_id, bool):
                raise jsonschema.ValidationError('"id" field must be an integer.')

    # -- conversion ----------------------------------------------------------------------

    def _process_annotation(
        self, anno: Any, flat: bool = False, pop_is_uploaded: bool = True, pop_uploaded_id: bool = True
    ) -> dict[str, Any]:
        """The annotation as a dict without None values: nested as the server takes it, or
        ``flat`` with ``<point>_position`` keys; tracking fields dropped unless asked."""
        record = attrs.asdict(anno, filter=lambda attribute, value: value is not None)
        if pop_is_uploaded:
            record.pop(self.IS_UPLOADED_FIELD, None)
        if pop_uploaded_id:
            record.pop(self.UPLOADED_ID_FIELD, None)
        record = {key: self._convert_value(key, value) for key, value in record.items()}
        if flat:
            return record
        return {
            self._convert_pts.get(key, key): {"position": value} if key in self._convert_pts else value
            for key, value in record.items()
        }

    def _convert_value(self, key: str, value: Any) -> Any:
        value = _plain(value)
        if key in self._convert_pts and self._anno_scaling is not None:
            return [coordinate * factor for coordinate, factor in zip(value, self._anno_scaling)]
        return value

    # -- public API ----------------------------------------------------------------------

    def __repr__(self) -> str:
        kind = "updated" if self._update else "new"
        target = f"table '{self.table_name}'" if self.table_name else f"schema '{self._ref_class}' with no table"
        uploaded = sum(1 for a in self._anno_list if getattr(a, self.IS_UPLOADED_FIELD, False))
        return f"Staged annotations for {target} ({len(self)} {kind} annotations, {uploaded} uploaded)"

    def __len__(self) -> int:
        return len(self._anno_list)

    def add_dataframe(self, df: pd.DataFrame) -> None:
        """Stage one annotation per row; the columns must include ``fields_required`` and be
        among ``fields``."""
        missing = [c for c in self.fields_required if c not in df.columns]
        extra = [c for c in df.columns if c not in self.fields]
        if missing and extra:
            raise ValueError(
                f"Schema needs columns not in dataframe: {missing} and dataframe has columns that "
                f"do not match fields: {extra}."
            )
        if missing:
            raise ValueError(f"Schema needs columns not in dataframe: {missing}.")
        if extra:
            raise ValueError(f"Dataframe has columns that are not in schema:  {extra}.")
        for record in df.to_dict(orient="records"):
            self.add(**record)

    @property
    def table_name(self) -> str | None:
        """The table the annotations are for (settable)."""
        return self._table_name

    @table_name.setter
    def table_name(self, value: str | None) -> None:
        self._table_name = value

    @property
    def is_update(self) -> bool:
        """Whether the annotations update existing ones."""
        return self._update

    @property
    def fields(self) -> list[str]:
        """The keyword arguments of ``add`` (points as ``<point>_position``)."""
        names = [self._flat_name(p) for p in self._props]
        return ["id", *names] if self._id_field else names

    @property
    def fields_required(self) -> list[str]:
        """The keyword arguments ``add`` needs."""
        names = [self._flat_name(p) for p in self._required_props]
        return ["id", *names] if self._id_field else names

    @property
    def annotation_list(self) -> list[dict[str, Any]]:
        """Every staged annotation, formatted for upload."""
        return [self._process_annotation(a) for a in self._anno_list]

    @property
    def annotation_list_nonuploaded(self) -> list[dict[str, Any]]:
        """The annotations not uploaded yet, formatted for upload."""
        return [self._process_annotation(a) for a in self._anno_list if not self._is_uploaded(a)]

    def _is_uploaded(self, anno: Any) -> bool:
        return bool(getattr(anno, self.IS_UPLOADED_FIELD, False))

    def _annotation_batches(self, batch_size: int) -> list[list[Any]]:
        """The annotations not uploaded yet, in lists of at most ``batch_size``."""
        pending = [a for a in self._anno_list if not self._is_uploaded(a)]
        return [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]

    def _apply_upload_result(self, batch: list[Any], batch_ids: Any) -> None:
        """Mark a batch uploaded with the server's answer: a list of new ids in batch order
        (posts), or ``{"<old id>": new id}`` (updates, looked up by id, so order is free)."""
        if self.is_update:
            new_ids = [batch_ids[str(a.id)] for a in batch]
        else:
            assert len(batch_ids) == len(batch), f"Server returned {len(batch_ids)} ids for batch of size {len(batch)}"
            new_ids = list(batch_ids)
        for anno, new_id in zip(batch, new_ids):
            setattr(anno, self.UPLOADED_ID_FIELD, new_id)
            setattr(anno, self.IS_UPLOADED_FIELD, True)

    def annotation_dataframe(self, only_nonuploaded: bool = False, include_tracking: bool = False) -> pd.DataFrame:
        """One row per staged annotation, points as ``<point>_position`` columns.

        ``include_tracking`` adds ``is_uploaded`` and ``new_id`` (nullable ``Int64``; for
        updates ``id`` keeps the old id).
        """
        annos = [a for a in self._anno_list if not (only_nonuploaded and self._is_uploaded(a))]
        records = [
            self._process_annotation(
                a, flat=True, pop_is_uploaded=not include_tracking, pop_uploaded_id=not include_tracking
            )
            for a in annos
        ]
        df = pd.DataFrame.from_records(records)
        if include_tracking:
            df = df.rename(
                columns={self.IS_UPLOADED_FIELD: self.IS_UPLOADED_COLUMN, self.UPLOADED_ID_FIELD: self.NEW_ID_COLUMN}
            )
            if self.NEW_ID_COLUMN in df.columns:
                df[self.NEW_ID_COLUMN] = df[self.NEW_ID_COLUMN].astype("Int64")
        return df

    def clear_annotations(self) -> None:
        """Forget every staged annotation."""
        self._anno_list = []

    def purge_uploaded_annotations(self) -> None:
        """Forget the annotations already uploaded."""
        self._anno_list = [a for a in self._anno_list if not self._is_uploaded(a)]
