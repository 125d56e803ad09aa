"""Input files of an import: where they are, what format they hold, how DuckDB reads them.

Formats are told by name: ``.parquet``/``.pq`` (Parquet), ``.feather``/``.arrow``/``.ipc``
(Arrow IPC files), ``.csv``/``.csv.gz``/``.tsv`` (a header row), and the CAVE static-export
layout — a headerless ``X.csv.gz`` next to ``X_header.csv`` (``column,postgres_type`` lines).
Remote files (any fsspec or cloud-files URL) are copied into a staging directory first, with
progress, so every later pass reads a local file.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pa_csv

from opencave.errors import BadRequest

Format = Literal["csv", "cave-csv", "parquet", "arrow"]
Progress = Callable[[str], None]
PARQUET_SUFFIXES = (".parquet", ".pq")
ARROW_SUFFIXES = (".feather", ".arrow", ".ipc")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".csv.bz2", ".csv.zst")

# PostgreSQL types of static-export header files -> the DuckDB type the values are read as
POSTGRES_TYPES = {
    "bigint": "BIGINT",
    "int8": "BIGINT",
    "integer": "INTEGER",
    "int4": "INTEGER",
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "int2": "SMALLINT",
    "double precision": "DOUBLE",
    "float8": "DOUBLE",
    "real": "FLOAT",
    "float4": "FLOAT",
    "numeric": "DOUBLE",
    "boolean": "BOOLEAN",
    "bool": "BOOLEAN",
    "character varying": "VARCHAR",
    "varchar": "VARCHAR",
    "text": "VARCHAR",
    "character": "VARCHAR",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ",
    "timestamptz": "TIMESTAMPTZ",
    "date": "DATE",
}


# The Arrow type of each DuckDB type a file's values are read as.
ARROW_OF_DUCKDB = {
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "SMALLINT": pa.int32(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "DATE": pa.date32(),
    "VARCHAR": pa.string(),
}
# PostgreSQL's text forms of these pyarrow's CSV reader parses as DuckDB does not always (zone
# offsets like +00, dates): a static export's columns of these types are read as text.
READ_AS_TEXT = ("TIMESTAMPTZ", "DATE")
GZIP_MAGIC = b"\x1f\x8b"
CSV_BLOCK_BYTES = 4 << 20


class InputProblem(BadRequest):
    """An input file that cannot be read as given (names the file and what is wrong)."""

    def __init__(self, message: str, code: str = "invalid_input_file") -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True)
class HeaderColumn:
    name: str
    postgres_type: str

    @property
    def duckdb_type(self) -> str:
        return POSTGRES_TYPES.get(self.postgres_type.strip().lower(), "VARCHAR")


@dataclass(frozen=True)
class InputFile:
    """One local file to read, with the name the user knows it by (for error messages)."""

    path: Path
    label: str
    format: Format
    header: tuple[HeaderColumn, ...] = ()  # cave-csv: the columns of its header file
    header_label: str | None = None

    def source_sql(self) -> str:
        """A DuckDB table expression reading every row of the file (CSV values as text)."""
        path = _quote(self.path)
        if self.format == "parquet":
            return f"read_parquet({path})"
        if self.format == "cave-csv":
            columns = "{" + ", ".join(f"{_quote(c.name)}: 'VARCHAR'" for c in self.header) + "}"
            return (
                f"read_csv({path}, header=false, auto_detect=false, delim=',', quote='\"', escape='\"', "
                f"columns={columns}, allow_quoted_nulls=false, null_padding=false, compression='auto')"
            )
        if self.format == "csv":
            return f"read_csv({path}, header=true, all_varchar=true, allow_quoted_nulls=false, compression='auto')"
        raise AssertionError("Arrow files are registered as Arrow datasets, not read by SQL")

    @contextmanager
    def typed_stream(self) -> Iterator[pa.RecordBatchReader | None]:
        """cave-csv (plain or gzip): the rows typed by the header file, parsed by pyarrow on every
        core (gzip inflated by ISA-L) — three times DuckDB's text reading. pyarrow is stricter
        (a ``1.0`` in an integer column, a bad row): a read that fails is made again by
        ``source_sql``, which accepts what it should and names what is wrong. None where only
        that applies (other formats and compressions)."""
        if self.format != "cave-csv":
            yield None
            return
        with open(self.path, "rb") as raw:
            magic = raw.read(2)
        if magic == GZIP_MAGIC:
            from isal import igzip_threaded

            stream = igzip_threaded.open(self.path, "rb")
        elif self.path.suffix.lower() == ".csv":
            stream = open(self.path, "rb")
        else:
            yield None
            return
        types = {c.name: pa.string() if c.duckdb_type in READ_AS_TEXT else ARROW_OF_DUCKDB[c.duckdb_type] for c in self.header}
        with stream:
            try:
                reader = pa_csv.open_csv(
                    stream,
                    read_options=pa_csv.ReadOptions(column_names=list(types), block_size=CSV_BLOCK_BYTES),
                    parse_options=pa_csv.ParseOptions(delimiter=",", quote_char='"', double_quote=True, newlines_in_values=False),
                    convert_options=pa_csv.ConvertOptions(
                        column_types=types,
                        null_values=[""],
                        true_values=["t", "true"],
                        false_values=["f", "false"],
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                    ),
                )
            except (pa.ArrowInvalid, OSError):
                yield None
                return
            yield reader

    @property
    def typed_header(self) -> dict[str, str]:
        """cave-csv: column -> the DuckDB type its PostgreSQL type names."""
        return {c.name: c.duckdb_type for c in self.header}


def _quote(text: str | Path) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def is_url(name: str) -> bool:
    return "://" in name and not name.startswith("file://")


def shared_name(name: str) -> str:
    """A command line's file name as any process reads it: URLs as they are, local paths absolute."""
    if "://" in name:  # a URL, file:// ones included
        return name
    return os.path.abspath(os.path.expanduser(name))


def local_path(name: str) -> Path:
    return Path(name.removeprefix("file://")).expanduser()


def strip_suffix(name: str) -> str:
    """``X.csv.gz`` -> ``X`` (the stem a static-export header file is named after)."""
    for suffix in sorted(CSV_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def format_of(name: str) -> Format | None:
    lower = name.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(ARROW_SUFFIXES):
        return "arrow"
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def header_name(data_name: str) -> str:
    return f"{strip_suffix(data_name)}_header.csv"


def read_header(path: Path, label: str) -> tuple[HeaderColumn, ...]:
    """The columns of a static-export header file (``column,postgres_type`` per line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputProblem(f"{label}: the header file is missing; a static export names its columns in it", code="missing_header") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputProblem(f"{label}: cannot read the header file ({error})") from None
    columns = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2 or not row[0].strip():
            raise InputProblem(f"{label}, line {number}: expected 'column,postgres_type', got {','.join(row)!r}", code="invalid_header")
        columns.append(HeaderColumn(row[0].strip(), row[1].strip()))
    if not columns:
        raise InputProblem(f"{label}: the header file names no columns", code="invalid_header")
    names = [c.name for c in columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputProblem(f"{label}: columns {repeated} are named more than once", code="invalid_header")
    return tuple(columns)


def input_file(path: Path, label: str) -> InputFile:
    """A local file, its format told by name (a sibling ``_header.csv`` makes a CSV a static export)."""
    if not path.is_file():
        raise InputProblem(f"{label}: no such file", code="missing_file")
    fmt = format_of(path.name)
    if fmt is None:
        raise InputProblem(
            f"{label}: unknown format; name files .parquet, .feather/.arrow, .csv/.csv.gz "
            "(with a header row) or a static export's X.csv.gz with X_header.csv",
            code="unknown_format",
        )
    if fmt == "csv":
        header = path.with_name(header_name(path.name))
        if header.is_file() and header != path:
            return _checked_width(InputFile(path, label, "cave-csv", read_header(header, str(header)), str(header)))
    return InputFile(path, label, fmt)


def static_export_file(path: Path, label: str, header: Path, header_label: str) -> InputFile:
    if not path.is_file():
        raise InputProblem(f"{label}: no such file", code="missing_file")
    return _checked_width(InputFile(path, label, "cave-csv", read_header(header, header_label), header_label))


def _checked_width(item: InputFile) -> InputFile:
    """A static export whose first row has as many values as its header names columns (checked
    before anything else, so a mismatch is not mistaken for a schema that does not fit)."""
    import gzip

    with open(item.path, "rb") as raw:
        opener = gzip.open if raw.read(2) == b"\x1f\x8b" else open
    try:
        with opener(item.path, "rt", encoding="utf-8", newline="") as handle:
            first = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputProblem(f"{item.label}: cannot be read ({error})") from None
    if first is not None and len(first) != len(item.header):
        raise InputProblem(
            f"{item.label}, row 1: {len(first)} values, but the header file {item.header_label} names {len(item.header)} columns",
            code="column_count_mismatch",
        )
    return item


# -- remote sources ---------------------------------------------------------------------------------
class Remote:
    """A directory at an fsspec URL (cloud-files where fsspec lacks the protocol): list and copy."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._fs = None
        self._cf = None
        try:
            import fsspec

            self._fs, self._root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError):
            from cloudfiles import CloudFiles

            self._cf = CloudFiles(self.url)

    def names(self) -> list[str]:
        """File names directly in the directory (empty when it cannot be listed)."""
        try:
            if self._fs is not None:
                return sorted(Path(p).name for p in self._fs.ls(self._root, detail=False))
            return sorted(n for n in self._cf.list(flat=True) if "/" not in n)
        except (FileNotFoundError, NotImplementedError):
            return []
        except Exception as error:  # network and permission errors of any backend
            raise InputProblem(f"{self.url}: cannot list the directory ({type(error).__name__}: {error})", code="unreadable_source") from None

    def exists(self, name: str) -> bool:
        if self._fs is not None:
            return self._fs.exists(f"{self._root}/{name}")
        return bool(self._cf.exists(name))

    def copy(self, name: str, destination: Path, say: Progress | None = None) -> Path:
        """Copy one file to ``destination`` (skipped when a complete copy is there already)."""
        target = destination / name
        if target.is_file():
            return target
        destination.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        url = f"{self.url}/{name}"
        if say:
            say(f"  fetching {url}")
        try:
            if self._fs is not None:
                with self._fs.open(f"{self._root}/{name}", "rb") as source, open(partial, "wb") as sink:
                    shutil.copyfileobj(source, sink, 8 << 20)
            else:
                data = self._cf.get(name, raw=True)
                if data is None:
                    raise FileNotFoundError(url)
                partial.write_bytes(data)
        except FileNotFoundError:
            partial.unlink(missing_ok=True)
            raise InputProblem(f"{url}: no such file", code="missing_file") from None
        except Exception as error:
            partial.unlink(missing_ok=True)
            raise InputProblem(f"{url}: cannot read ({type(error).__name__}: {error})", code="unreadable_source") from None
        partial.replace(target)
        return target


def resolve_files(names: list[str], staging: Path, say: Progress | None = None) -> list[InputFile]:
    """The files named on a command line (local paths, directories of Parquet parts, URLs)."""
    out: list[InputFile] = []
    for name in names:
        if is_url(name):
            parent, _, base = name.rstrip("/").rpartition("/")
            remote = Remote(parent)
            local = remote.copy(base, staging, say)
            header = header_name(base)
            if format_of(base) == "csv" and remote.exists(header):
                remote.copy(header, staging, say)
            out.append(input_file(local, name))
            continue
        path = local_path(name)
        if path.is_dir():
            parts = sorted(p for p in path.iterdir() if p.suffix in PARQUET_SUFFIXES + ARROW_SUFFIXES)
            if not parts:
                raise InputProblem(f"{name}: a directory holding no Parquet or Arrow files", code="missing_file")
            out.extend(input_file(p, str(p)) for p in parts)
        else:
            out.append(input_file(path, name))
    return out
