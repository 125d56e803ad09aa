"""The version package: a materialized version as open files that import back exactly.

```
OUT/version.json                      the manifest
OUT/tables/<name>/part-00000.parquet  one Parquet dataset per table (the frozen layout)
OUT/views/<name>/part-00000.parquet   one per view (its stored columns)
```

Each Parquet file also carries its entry (without ``path``) as key-value metadata ``opencave``,
so a dataset copied on its own still says what it is. With ``files == "cave-csv"`` the same
manifest sits beside a CAVE static export and each entry's ``path`` names its ``.csv.gz`` file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from opencave.errors import BadRequest
from opencave.services.materialize.versions import as_utc, format_time

MANIFEST = "version.json"
FORMAT = "opencave-version"
FORMAT_VERSION = 1
PARQUET_KEY = b"opencave"


@dataclass(frozen=True)
class PackageTable:
    name: str
    kind: Literal["table", "view"]
    schema: str | None
    row_count: int
    path: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def parquet_metadata(self) -> dict[bytes, bytes]:
        """The entry as the key-value metadata of each of its Parquet files."""
        entry = {k: v for k, v in asdict(self).items() if k != "path"}
        return {PARQUET_KEY: json.dumps(entry, sort_keys=True).encode()}


@dataclass(frozen=True)
class VersionPackage:
    datastack: str
    version: int
    time_stamp: datetime
    tables: list[PackageTable]
    files: Literal["parquet", "cave-csv"] = "parquet"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "files": self.files,
            "datastack": self.datastack,
            "version": self.version,
            "time_stamp": format_time(self.time_stamp),
            "tables": [asdict(table) for table in self.tables],
        }


def _problem(directory: Path | str, what: str) -> BadRequest:
    return BadRequest(f"{directory}/{MANIFEST}: {what}", code="invalid_manifest")


def parse_manifest(text: str, where: Path | str) -> VersionPackage:
    """A manifest's JSON text as a package (``BadRequest`` naming the file and what is wrong)."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise _problem(where, f"not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _problem(where, f'not an opencave version manifest (its "format" must be "{FORMAT}")')
    if data.get("format_version") != FORMAT_VERSION:
        raise _problem(where, f"format_version {data.get('format_version')!r} is not understood; this opencave reads {FORMAT_VERSION}")
    try:
        tables = [
            PackageTable(
                name=str(t["name"]),
                kind=t["kind"],
                schema=t.get("schema"),
                row_count=int(t["row_count"]),
                path=str(t["path"]),
                metadata=dict(t.get("metadata") or {}),
            )
            for t in data["tables"]
        ]
        files = data.get("files", "parquet")
        if files not in ("parquet", "cave-csv") or any(t.kind not in ("table", "view") for t in tables):
            raise ValueError('"files" must be parquet or cave-csv and every "kind" table or view')
        return VersionPackage(
            datastack=str(data["datastack"]),
            version=int(data["version"]),
            time_stamp=as_utc(datetime.fromisoformat(str(data["time_stamp"]).replace("Z", "+00:00"))),
            tables=tables,
            files=files,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise _problem(where, f"malformed ({type(error).__name__}: {error})") from None


def read_package(directory: Path) -> VersionPackage | None:
    """The package whose manifest is in ``directory`` (None: there is no manifest)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    return parse_manifest(path.read_text(), directory)


def write_manifest(directory: Path, package: VersionPackage) -> None:
    """Write the manifest atomically (last, so a package with a manifest is complete)."""
    path = Path(directory) / MANIFEST
    partial = path.with_name(f"{MANIFEST}.partial-{os.getpid()}")
    partial.write_text(json.dumps(package.to_json(), indent=1, sort_keys=False) + "\n")
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)


def entry_files(directory: Path, entry: PackageTable) -> list[Path]:
    """The data files of an entry: a dataset directory's Parquet parts in name order, or the one file."""
    path = Path(directory) / entry.path
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == ".parquet" and not p.name.startswith("."))
    return [path] if path.is_file() else []
