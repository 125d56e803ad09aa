"""The quick path of an import: inputs whose every row is good are read once and written as the
frozen file; anything else (a bad or not-valid row, a value only the text reader accepts) is left
to ``stage``, which names or skips the rows. Both give the same rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencave.services.transfer.inputs import input_file, static_export_file
from opencave.services.transfer.staging import RowsRejected, Target, connect, stage, write_kept

COPY = "FORMAT parquet, COMPRESSION lz4, ROW_GROUP_SIZE 65536"
HEADER = [
    ("id", "bigint"),
    ("created", "timestamp without time zone"),
    ("valid", "boolean"),
    ("pt_supervoxel_id", "bigint"),
    ("pt_root_id", "bigint"),
    ("pt_position_x", "integer"),
    ("pt_position_y", "integer"),
    ("pt_position_z", "integer"),
    ("classification_system", "character varying"),
    ("cell_type", "character varying"),
]


def rows(count: int) -> list[list[str]]:
    return [
        [str(i), f"2024-01-0{1 + i % 9} 10:00:00.{i:06d}", "t", str(7_000 + i), str(864_000 + i), str(10 * i), str(20 * i), str(i % 5), "morphology", f"type {i % 3}"]
        for i in range(1, count + 1)
    ]


def static_export(folder: Path, lines: list[list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cells_merged_header.csv").write_text("".join(f"{n},{t}\n" for n, t in HEADER))
    data = folder / "cells_merged.csv.gz"
    data.write_bytes(gzip.compress("".join(",".join(line) + "\n" for line in lines).encode()))
    return data


def item(data: Path):
    return static_export_file(data, data.name, data.with_name("cells_merged_header.csv"), "cells_merged_header.csv")


TARGET = Target.table("cell_type_local")


def staged_rows(tmp_path: Path, data: Path, on_error: str = "reject") -> pa.Table:
    con = connect(tmp_path / "work")
    staged = stage(con, [item(data)], TARGET, tmp_path / "staged", on_error=on_error, direct=True)
    return con.sql(staged.relation(TARGET.names)).to_arrow_table()


def test_whole_static_export_is_written_in_one_read(tmp_path):
    data = static_export(tmp_path / "export", rows(1000))
    con = connect(tmp_path / "work")
    kept = write_kept(con, [item(data)], TARGET, tmp_path / "cells.parquet", COPY)
    assert kept is not None and kept.rows == 1000 and not list(tmp_path.glob("*.partial"))
    table = pq.read_table(kept.file)
    assert table.column_names == TARGET.names
    assert table.equals(staged_rows(tmp_path, data).cast(table.schema))


@pytest.mark.parametrize(
    "change",
    [
        lambda line: line.__setitem__(5, line[5] + ".0"),  # whole, written as a decimal: the text reader takes it
        lambda line: line.__setitem__(2, "f"),  # not valid: left out, and counted
        lambda line: line.__setitem__(5, "west"),  # bad: named by stage
        lambda line: line.append("surplus"),  # a row wider than the header
    ],
)
def test_anything_else_is_left_to_stage(tmp_path, change):
    lines = rows(50)
    change(lines[7])
    data = static_export(tmp_path / "export", lines)
    con = connect(tmp_path / "work")
    assert write_kept(con, [item(data)], TARGET, tmp_path / "cells.parquet", COPY) is None
    assert not list(tmp_path.glob("cells.parquet*")), "nothing is left of the attempt"


def test_stage_after_the_quick_path_gives_the_rows_it_would(tmp_path):
    lines = rows(50)
    lines[7][5] += ".0"
    data = static_export(tmp_path / "export", lines)
    clean = static_export(tmp_path / "clean", rows(50))
    assert staged_rows(tmp_path / "a", data).equals(staged_rows(tmp_path / "b", clean))
    lines[9][5] = "west"
    bad = static_export(tmp_path / "bad", lines)
    with pytest.raises(RowsRejected, match=r"cells_merged.csv.gz, row 10, column pt_position_x"):
        staged_rows(tmp_path / "c", bad)
    assert staged_rows(tmp_path / "d", bad, on_error="skip").num_rows == 49


def test_parquet_inputs_take_the_quick_path_too(tmp_path):
    data = static_export(tmp_path / "export", rows(300))
    reference = staged_rows(tmp_path / "ref", data)
    first, second = tmp_path / "part-1.parquet", tmp_path / "part-2.parquet"
    pq.write_table(reference.slice(0, 120).drop_columns(["valid"]), first)
    pq.write_table(reference.slice(120).drop_columns(["valid"]), second)
    con = connect(tmp_path / "work")
    kept = write_kept(con, [input_file(first, first.name), input_file(second, second.name)], TARGET, tmp_path / "cells.parquet", COPY)
    assert kept is not None and kept.rows == 300
    assert pq.read_table(kept.file).equals(reference.cast(pq.read_schema(kept.file)))
