"""Clustered copies of frozen tables, built after a version is published.

A frozen table is queried from its id-sorted file; a copy sorted by a root-id column only makes
selective root-id filters faster (row groups pruned), and the copy's Arrow twin
(``storage/arrow_copies.py``; tables of at most ``arrow_copies.max_rows()`` rows) makes reading
a few roots' rows cheaper still. So a version can be published as soon as
its id-sorted files are written and get its copies afterwards: ``MaterializeService`` reads a
copy only once its file exists, and ``heal`` (a periodic job of every serving process) builds
the copies that are missing.

Several processes may heal the same store. One builder works on a table at a time, holding a
lock file beside it (created exclusively, naming its process); a lock left by a process that
has stopped — or, where that cannot be told (another host), one not refreshed for
``STALE_AFTER`` — is taken over. Copies are written under a temporary name and renamed, so a
reader never sees a partial file; a version deleted meanwhile ends the work quietly.

A version on object storage (``VersionFiles``) gets its copies built from the cached file in a
local staging directory and uploaded; processes on different hosts share no lock there, so two
may build the same copy at the same time (each upload is whole, and the copies are equal).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

import pyarrow.parquet as pq

from opencave.background import repeating
from opencave.services.materialize.layout import frozen_layout
from opencave.services.materialize.versions import STALE_AFTER, VersionRegistry, builder_gone, worker_name
from opencave.storage import arrow_copies
from opencave.storage.arrow_copies import arrow_copy_name, write_arrow_copy
from opencave.storage.snapshots import CLUSTERED_ROW_GROUP_ROWS, COMPRESSION, clustered_name, parquet_source
from opencave.storage.version_files import VersionFiles, is_remote

log = logging.getLogger(__name__)
MEMORY_LIMIT = "1GB"  # DuckDB sorts within this and spills the rest beside the table


def lock_name(file: str) -> str:
    """The lock file of ``file``'s clustered copies, beside it."""
    return f"{file}.clustering.lock"


def _spill_name(file: str) -> str:
    return f"{file}.clustering-spill"


def ensure_clustered(
    directory: Path, file: str, columns: Sequence[str], say: Callable[[str], None] | None = None, row_count: int | None = None
) -> list[str]:
    """Write the missing clustered copies of ``directory/file`` (one per column of ``columns``)
    and their missing Arrow twins (``row_count``, the table's when known, tells whether twins
    are due; else the file's footer does).

    Returns the columns whose copy or twin this call built: none when another live process
    holds the table's lock, or when the version's directory is gone (deleted or expired
    meanwhile)."""
    directory = Path(directory)
    main = directory / file
    if not main.exists():
        return []
    try:
        twins = arrow_copies.wanted(pq.ParquetFile(main).metadata.num_rows if row_count is None else row_count)
    except FileNotFoundError:  # the version went away meanwhile
        return []
    if not _missing(lambda name: (directory / name).exists(), file, columns, twins):
        return []
    lock = directory / lock_name(file)
    try:
        if not _acquire(lock):
            return []
    except FileNotFoundError:  # the directory went away
        return []
    built: list[str] = []
    try:
        # Touched while held, so that a builder on another host, which cannot check this
        # process, never takes a live lock for stale.
        with repeating(STALE_AFTER.total_seconds() / 4, lambda: os.utime(lock), f"clustering-lock-{lock.name}"):
            _remove_leftovers(directory, file, columns)
            missing = _missing(lambda name: (directory / name).exists(), file, columns, twins)
            if missing:
                _build(directory, file, missing, twins, built, say or (lambda message: None))
    except (OSError, duckdb.Error):
        if main.exists():
            raise
        log.info("version directory %s vanished while its copies were built; nothing left to do", directory)
    finally:
        _remove_leftovers(directory, file, columns)
        lock.unlink(missing_ok=True)
    return built


def ensure_version_clustered(
    files: VersionFiles,
    location: str,
    file: str,
    columns: Sequence[str],
    say: Callable[[str], None] | None = None,
    row_count: int | None = None,
) -> list[str]:
    """``ensure_clustered`` for a version wherever its files are: in place when local; when
    remote, built beside a cached copy of the file in a staging directory, then uploaded.
    ``row_count`` (the table's, when known) tells without a download whether twins are due."""
    if not is_remote(location):
        return ensure_clustered(Path(location), file, columns, say, row_count)
    twins = None if row_count is None else arrow_copies.wanted(row_count)
    missing = _missing(lambda name: files.exists(location, name), file, columns, twins)
    if not missing:
        return []
    work = files.staging(location)
    try:
        try:
            source = files.local_path(location, file)
            try:
                os.link(source, work / file)
            except OSError:
                shutil.copyfile(source, work / file)
        except FileNotFoundError:
            log.info("version %s vanished before its copies were built; nothing left to do", location)
            return []
        built = ensure_clustered(work, file, missing, say, row_count)
        for column in built:
            for name in (clustered_name(file, column), arrow_copy_name(file, column)):
                if (work / name).exists():
                    files.put(location, name, work / name)
        return built
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _missing(exists: Callable[[str], bool], file: str, columns: Sequence[str], twins: bool | None) -> list[str]:
    """The columns whose copy, or whose Arrow twin (when ``twins``; None: when the table is
    small enough, told by the copy's own row count), is not there yet."""
    out = []
    for column in columns:
        if not exists(clustered_name(file, column)):
            out.append(column)
        elif twins is not False and not exists(arrow_copy_name(file, column)):
            out.append(column)
    return out


def _build(directory: Path, file: str, columns: list[str], twins: bool, built: list[str], say: Callable[[str], None]) -> None:
    """Write one copy per column, and its Arrow twin when ``twins`` (appending each column to
    ``built`` once its files are in place)."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET memory_limit = ?", [MEMORY_LIMIT])
        con.execute("SET temp_directory = ?", [str(directory / _spill_name(file))])
        con.execute("SET preserve_insertion_order = false")  # the ORDER BY alone sets the order
        con.execute("SET enable_progress_bar = false")
        source = parquet_source(directory / file)
        for column in columns:
            target = directory / clustered_name(file, column)
            if not target.exists():
                partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
                key = '"' + column.replace('"', '""') + '"'
                target_literal = "'" + str(partial).replace("'", "''") + "'"
                con.execute(
                    f"COPY (SELECT * FROM {source} ORDER BY {key}, id) TO {target_literal} "
                    f"(FORMAT parquet, COMPRESSION {COMPRESSION}, ROW_GROUP_SIZE {CLUSTERED_ROW_GROUP_ROWS}, DICTIONARY_SIZE_LIMIT 1000)"
                )
                with open(partial, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(partial, target)
            twin = directory / arrow_copy_name(file, column)
            if twins and not twin.exists():
                write_arrow_copy(twin, target, column)
            built.append(column)
            say(f"{directory.name}/{file}: clustered by {column}")
    finally:
        con.close()


def _remove_leftovers(directory: Path, file: str, columns: Sequence[str]) -> None:
    """Partial copies and spilled sort runs of the table (its lock's holder's, or a dead one's)."""
    for column in columns:
        for name in (clustered_name(file, column), arrow_copy_name(file, column)):
            for partial in directory.glob(f"{name}.partial-*"):
                partial.unlink(missing_ok=True)
    shutil.rmtree(directory / _spill_name(file), ignore_errors=True)


# -- the lock ------------------------------------------------------------------------------------
def _acquire(lock: Path) -> bool:
    """Create ``lock`` holding this process's name; False if a live process holds it.

    FileNotFoundError when the directory is gone."""
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _take_over(lock):
                return False
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(worker_name())
        return True
    return False  # others keep taking it at the same moment: leave it to them


def _take_over(lock: Path) -> bool:
    """Remove ``lock`` if its holder is gone (True: try to create it again).

    The lock is first renamed aside and its content compared with what was judged, so a lock
    taken anew in between by a live process is put back rather than removed."""
    try:
        judged = lock.stat()
        holder = lock.read_text()
    except FileNotFoundError:
        return True  # released meanwhile
    gone = builder_gone(holder)
    if gone is None:  # another host, or a name not written yet: judged by how fresh the lock is
        gone = time.time() - judged.st_mtime > STALE_AFTER.total_seconds()
    if not gone:
        return False
    aside = lock.with_name(f"{lock.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return True
    try:
        moved = aside.stat()
        if (moved.st_dev, moved.st_ino) == (judged.st_dev, judged.st_ino) and aside.read_text() == holder:
            log.warning("took over the clustering lock %s of %s, which has stopped", lock, holder)
            return True
        try:
            os.link(aside, lock)  # a live holder's lock: put it back
        except FileExistsError:
            pass
        return False
    finally:
        aside.unlink(missing_ok=True)


# -- healing -------------------------------------------------------------------------------------
def heal(registry: VersionRegistry, say: Callable[[str], None] | None = None) -> int:
    """Build every missing clustered copy of every published version's tables; the number built.

    One table's failure is logged and the others are still done."""
    count = 0
    files = registry.files
    for version in registry.published():
        for table in registry.tables(version, "table"):
            try:
                columns = frozen_layout(table.schema).root_columns
                count += len(ensure_version_clustered(files, version.location, table.file, columns, say, table.row_count))
            except Exception:
                log.exception(
                    "building the clustered copies of %s in version %s of %s failed", table.table_name, version.version, version.datastack
                )
    if count:
        log.info("built %d clustered copies", count)
    return count
