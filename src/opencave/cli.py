"""The ``opencave`` command: run the server, administer accounts and access, set up tokens.

Administration commands work directly on the data directory or database (no server needed).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import secrets
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from opencave.config import DEFAULT_PORT, cors_origins, resolve_settings
from opencave.errors import BadRequest, OpencaveError

HTTP_PROTOCOL = "opencave.server.protocol:JsonErrorHttpToolsProtocol"  # parse errors answered as JSON
DATASTACK_OPTIONS = (
    "description",
    "local_server",
    "segmentation_source",
    "skeleton_source",
    "viewer_site",
    "synapse_table",
    "soma_table",
)


def _storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="data directory (default: $OPENCAVE_DATA_DIR or ~/.opencave)")
    parser.add_argument("--database", help="database URL, e.g. postgresql://user:pw@host/db (default: SQLite in the data directory)")
    parser.add_argument(
        "--versions-url",
        help="where frozen versions' files live: a directory, or object storage such as s3://bucket/prefix or gs://bucket/prefix, "
        "credentials from the usual environment (default: $OPENCAVE_VERSIONS_URL, $OPENCAVE_VERSIONS_DIR or DATA_DIR/versions)",
    )
    parser.add_argument(
        "--versions-cache-size",
        type=_cache_size,
        help="bound of the local cache of versions on object storage, e.g. 500MB or 20GiB (default: $OPENCAVE_VERSIONS_CACHE_SIZE or 20GiB)",
    )


def _cache_size(text: str) -> int:
    from opencave.storage.version_files import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _settings(args, *more, **named):
    """Settings from a command's storage options (and ``more`` of ``resolve_settings``)."""
    return resolve_settings(
        getattr(args, "data_dir", None),
        getattr(args, "database", None),
        *more,
        versions_url=getattr(args, "versions_url", None),
        versions_cache_size=getattr(args, "versions_cache_size", None),
        **named,
    )


def _runtime(args):
    """The store, opened and migrated, with its first superadmin; never the demo (``serve``
    builds that), so administration commands on an empty data directory are quick."""
    from opencave.runtime import Runtime

    runtime = Runtime.open(_settings(args))
    runtime.prepare()
    first_run = runtime.take_first_run()
    if first_run is not None:  # stderr: stdout of commands like `token create` must stay clean
        print(
            f"set up a new opencave store; admin login: {first_run.admin_email} password: {first_run.admin_password}",
            file=sys.stderr,
        )
    return runtime


def _location(args) -> str:
    """The storage options that name this store again in a suggested command."""
    return f"--data-dir {resolve_settings(args.data_dir, args.database).data_dir}" if args.database is None else "--database URL"


def _port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (checked before anything is printed
    or built), or None. Binds as uvicorn does, with SO_REUSEADDR."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        return f"cannot listen on {host}: {error.strerror}; choose another --host"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another opencave serve?); stop it or choose another --port"
            return f"cannot listen on {host}:{port} ({error.strerror}); choose another --host or --port"
    return None


def _storage_problem(error: BaseException, args) -> str | None:
    """One line telling the operator what to fix when the data directory (or database) cannot
    be written, or None for any other error."""
    from opencave.storage.faults import StorageFault, storage_fault

    fault = storage_fault(error)
    denied = isinstance(error, PermissionError)
    if fault is None and not denied:
        return None
    where = resolve_settings(getattr(args, "data_dir", None), getattr(args, "database", None)).data_dir
    filename = Path(os.fsdecode(error.filename)) if isinstance(error, OSError) and error.filename else None
    if filename is not None and not (filename.is_relative_to(where) or where.is_relative_to(filename)):
        where = filename.parent  # e.g. a versions directory elsewhere
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(getattr(error, "orig", error)).splitlines()[0]
    if fault is StorageFault.FULL:
        return f"opencave: no space left for the data directory {where} ({reason}); free some space or choose another --data-dir"
    if getattr(args, "database", None) and not isinstance(error, OSError):
        return f"opencave: the database cannot be written ({reason}); check the --database server and its disk"
    return f"opencave: cannot write to the data directory {where} ({reason}); choose a writable --data-dir"


def _print_rows(rows: list[dict]) -> None:
    if not rows:
        print("(none)")
        return
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for row in rows:
        print("  ".join(str(row[k]).ljust(widths[k]) for k in keys))


# -- serve ----------------------------------------------------------------------------------------
def cmd_serve(args) -> int:
    import uvicorn

    from opencave.demo.registration import DEMO_DATASTACK
    from opencave.runtime import Runtime
    from opencave.server.app import create_app
    from opencave.server.log_redaction import redacted_logging

    settings = _settings(args, args.host, args.port, args.public_url, auth_enabled=not args.no_auth)
    busy = _port_problem(settings.host, settings.port)
    if busy:
        print(f"opencave: {busy}", file=sys.stderr)
        return 2
    if args.row_limit is not None:
        if args.row_limit <= 0:
            print("error: --row-limit must be positive", file=sys.stderr)
            return 2
        os.environ["OPENCAVE_QUERY_ROW_LIMIT"] = str(args.row_limit)
        settings = dataclasses.replace(settings, query_row_limit=args.row_limit)
    if args.cors_origins is not None:
        os.environ["OPENCAVE_CORS_ORIGINS"] = args.cors_origins  # worker processes read it too
        settings = dataclasses.replace(settings, cors_origins=cors_origins(args.cors_origins))
    if args.redirect_origins is not None:
        os.environ["OPENCAVE_REDIRECT_ORIGINS"] = args.redirect_origins
        settings = dataclasses.replace(settings, redirect_origins=cors_origins(args.redirect_origins))
    if args.viewer_site:
        os.environ["OPENCAVE_VIEWER_SITE"] = args.viewer_site
        settings = dataclasses.replace(settings, viewer_site=args.viewer_site)
    if args.job_threads is not None:
        os.environ["OPENCAVE_JOB_THREADS"] = str(max(0, args.job_threads))  # worker processes read it too
        settings = dataclasses.replace(settings, job_threads=max(0, args.job_threads))
    runtime = Runtime.open(settings)
    first_run = runtime.initialise(with_demo=True)
    url = settings.server_url
    lines = [f"opencave is serving {url}", f"  datastack:   {DEMO_DATASTACK}", f"  data:        {settings.data_dir}"]
    location = _location(args)
    if first_run is not None:
        lines.append(f"  admin login: {first_run.admin_email}  password: {first_run.admin_password}  (shown once)")
    if not runtime.anyone_signed_in():  # until someone logs in, say how to recover a lost password
        lines.append(f"  no login yet: set a password with `opencave user set-password {runtime.first_admin_email()} {location}`")
    lines += [
        f"  get a token: log in at {url}/sticky_auth/settings/tokens",
        f"               or run `opencave token create admin@localhost {location}`",
        f"  then:        python -c 'from opencave import CAVEclient; CAVEclient.setup_token(\"{url}\")'",
    ]
    if args.no_auth:
        lines.append("  WARNING: authentication is switched off; every request acts as a superadmin.")
    if args.materialize_every:
        from opencave.services.materialize.schedule import schedule_versions

        schedule_versions(runtime, args.materialize_every, args.version_expires_after)
        lines.append(f"  versions:    every {args.materialize_every:g} h")
    print("\n".join(lines), flush=True)
    log_level = args.log_level
    if args.workers > 1:
        os.environ.update(
            OPENCAVE_DATA_DIR=str(settings.data_dir),
            OPENCAVE_DATABASE_URL=settings.database_url,
            OPENCAVE_PUBLIC_URL=url,
            OPENCAVE_AUTH="0" if args.no_auth else "1",
            OPENCAVE_VERSIONS_URL=settings.versions_location,
            OPENCAVE_VERSIONS_CACHE_SIZE=str(settings.versions_cache_bytes),
        )
        if args.materialize_every:
            runtime.start()  # the schedule runs here; each worker process has its own runtime
        else:
            runtime.close()
        uvicorn.run(
            "opencave.server.asgi:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=args.workers,
            log_level=log_level,
            access_log=not args.no_access_log,
            http=HTTP_PROTOCOL,
            log_config=redacted_logging(),
        )
        runtime.close()
    else:
        uvicorn.run(
            create_app(runtime),
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            access_log=not args.no_access_log,
            http=HTTP_PROTOCOL,
            log_config=redacted_logging(),
        )
    return 0


# -- users ----------------------------------------------------------------------------------------
def cmd_user_add(args) -> int:
    runtime = _runtime(args)
    user = runtime.accounts.create_user(args.email, args.name, admin=args.admin, password=args.password)
    print(f"created user {user.id} {user.email}{' (admin)' if user.admin else ''}")
    return 0


def cmd_user_list(args) -> int:
    users = _runtime(args).accounts.find_users()
    _print_rows([{"id": u.id, "email": u.email, "name": u.name, "admin": u.admin, "password": u.has_password} for u in users])
    return 0


def _read_password(from_stdin: bool) -> str:
    """A password from the first line of stdin, or typed twice at a hidden prompt: never from
    the command line, where other users see it (``ps``)."""
    import getpass

    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            raise SystemExit("opencave: the passwords differ; nothing was changed")
    if not password:
        raise SystemExit("opencave: no password given; nothing was changed")
    return password


def cmd_user_password(args) -> int:
    password = _read_password(args.password_stdin)
    _runtime(args).accounts.set_password(args.email, password)
    print(f"password set for {args.email}")
    return 0


def cmd_user_admin(args) -> int:
    runtime = _runtime(args)
    user = runtime.accounts.get_user_by_email(args.email)
    runtime.accounts.update_user(user.id, admin=not args.revoke)
    print(f"{args.email} is {'no longer ' if args.revoke else ''}a superadmin")
    return 0


def cmd_user_remove(args) -> int:
    runtime = _runtime(args)
    runtime.accounts.delete_user(runtime.accounts.get_user_by_email(args.email).id)
    print(f"removed {args.email}")
    return 0


def cmd_service_account_add(args) -> int:
    runtime = _runtime(args)
    account = runtime.accounts.create_service_account(args.name, args.parent)
    print(runtime.tokens.create(account.id, description="service account"))
    return 0


# -- tokens ---------------------------------------------------------------------------------------
def cmd_token_create(args) -> int:
    runtime = _runtime(args)
    user = runtime.accounts.get_user_by_email(args.email)
    print(runtime.tokens.create(user.id, description=args.description))
    return 0


def cmd_token_list(args) -> int:
    runtime = _runtime(args)
    user = runtime.accounts.get_user_by_email(args.email)
    _print_rows(
        [
            {"id": t.id, "token": t.hint, "description": t.description, "created": t.created.isoformat(timespec="seconds")}
            for t in runtime.tokens.list_api_tokens(user.id)
        ]
    )
    return 0


def cmd_token_revoke(args) -> int:
    _runtime(args).tokens.revoke(args.token.strip().lower())
    print("revoked")
    return 0


# -- groups, datasets, permissions, terms of service ----------------------------------------------
def cmd_group_add(args) -> int:
    group = _runtime(args).accounts.create_group(args.name)
    print(f"created group {group['id']} {group['name']}")
    return 0


def cmd_group_list(args) -> int:
    _print_rows(_runtime(args).accounts.list_groups())
    return 0


def cmd_group_members(args) -> int:
    runtime = _runtime(args)
    _print_rows(runtime.accounts.group_members(runtime.accounts.group_id(args.group)))
    return 0


def cmd_group_add_user(args) -> int:
    _runtime(args).accounts.add_member(args.group, args.email, admin=args.admin)
    print(f"{args.email} is in group {args.group}")
    return 0


def cmd_group_remove_user(args) -> int:
    _runtime(args).accounts.remove_member(args.group, args.email)
    print(f"{args.email} left group {args.group}")
    return 0


def cmd_dataset_add(args) -> int:
    dataset = _runtime(args).access.create_dataset(args.name)
    print(f"created dataset {dataset['id']} {dataset['name']}")
    return 0


def cmd_dataset_list(args) -> int:
    _print_rows(_runtime(args).access.list_datasets())
    return 0


def cmd_dataset_map(args) -> int:
    _runtime(args).access.map_resource(args.namespace, args.resource, args.dataset)
    print(f"{args.namespace} '{args.resource}' belongs to dataset {args.dataset}")
    return 0


def cmd_dataset_admin(args) -> int:
    runtime = _runtime(args)
    runtime.access.add_dataset_admin(args.dataset, runtime.accounts.get_user_by_email(args.email).id)
    print(f"{args.email} administers dataset {args.dataset}")
    return 0


def cmd_permission_grant(args) -> int:
    _runtime(args).access.grant(args.group, args.dataset, args.permission)
    print(f"group {args.group} may {args.permission} dataset {args.dataset}")
    return 0


def cmd_permission_revoke(args) -> int:
    _runtime(args).access.revoke(args.group, args.dataset, args.permission)
    print(f"group {args.group} may no longer {args.permission} dataset {args.dataset}")
    return 0


def cmd_permission_list(args) -> int:
    _print_rows(_runtime(args).access.grants(args.dataset))
    return 0


def cmd_tos_add(args) -> int:
    text = open(args.file, encoding="utf-8").read() if args.file else args.text
    if not text:
        raise SystemExit("give the terms with --text or --file")
    tos = _runtime(args).access.create_tos(args.name, text, args.dataset)
    print(f"created terms of service {tos['id']} {tos['name']}")
    return 0


def cmd_datastack_list(args) -> int:
    runtime = _runtime(args)
    _print_rows([{"datastack": n, "aligned_volume": runtime.info.aligned_volume_of(n)} for n in runtime.info.datastack_names()])
    return 0


def cmd_datastack_add(args) -> int:
    runtime = _runtime(args)
    runtime.access.dataset(args.dataset)  # fail before writing anything
    fields = {key: getattr(args, key) for key in DATASTACK_OPTIONS if getattr(args, key) is not None}
    if args.viewer_resolution:
        fields.update(zip(("viewer_resolution_x", "viewer_resolution_y", "viewer_resolution_z"), args.viewer_resolution))
    if args.aligned_volume not in runtime.info.aligned_volume_names():
        if not args.image_source:
            raise SystemExit(f"aligned volume '{args.aligned_volume}' does not exist: give --image-source to create it")
        runtime.info.add_aligned_volume(args.aligned_volume, args.image_source)
        runtime.access.map_resource("aligned_volume", args.aligned_volume, args.dataset)
    fields.setdefault("viewer_site", runtime.settings.viewer_site)
    runtime.info.add_datastack(args.name, args.aligned_volume, **fields)
    runtime.access.map_resource("datastack", args.name, args.dataset)
    print(f"created datastack {args.name} in dataset {args.dataset}")
    return 0


def cmd_datastack_update(args) -> int:
    fields = {key: getattr(args, key) for key in DATASTACK_OPTIONS if getattr(args, key) is not None}
    if not fields:
        raise BadRequest("Nothing to change: give at least one option, e.g. --viewer-site URL.")
    _runtime(args).info.update_datastack(args.name, **fields)
    print(f"datastack {args.name}: " + ", ".join(f"{key} = {value}" for key, value in fields.items()))
    return 0


def cmd_datastack_mirror(args) -> int:
    _runtime(args).info.add_image_source(args.name, args.aligned_volume, args.image_source, args.description or "")
    print(f"aligned volume {args.aligned_volume} has image mirror {args.name}")
    return 0


def cmd_demo_create(args) -> int:
    from opencave.demo.graph import build_world_graph
    from opencave.demo.population import populate_demo
    from opencave.demo.registration import register_demo

    runtime = _runtime(args)
    world_dir = runtime.settings.data_dir / "worlds" / args.name
    register_demo(runtime.access, runtime.info, runtime.settings.viewer_site, name=args.name)
    handle = build_world_graph(runtime.graphs, runtime.l2cache, args.name, world_dir, args.size, args.seed)
    print(f"datastack {args.name}: {handle.index.n_sv:,} supervoxels, {handle.index.seq} operations, world in {world_dir}")
    if not args.no_annotations:
        populate_demo(runtime, args.name, world_dir, seed=args.seed, progress=lambda m: print(m, flush=True))
        print(f"datastack {args.name}: annotation tables filled, versions {runtime.materialize.versions(args.name)}")
    return 0


# -- materialization -------------------------------------------------------------------------------
def _moment(text: str | None):
    from opencave.services.materialize.requests import parse_timestamp

    return parse_timestamp(text) if text else None


def _materializing_runtime(args):
    """The store for a ``materialize`` command, after discarding versions whose builder died
    (so they are neither listed as RUNNING nor left on disk)."""
    runtime = _runtime(args)
    runtime.materializer.discard_abandoned()
    return runtime


def cmd_materialize_create(args) -> int:
    from datetime import datetime, timedelta, timezone

    from opencave.services.jobs.kinds import CREATE_VERSION, moment_text

    runtime = _materializing_runtime(args)
    moment = _moment(args.timestamp)
    expires = (moment or datetime.now(timezone.utc)) + timedelta(days=args.expires_after) if args.expires_after else None
    payload = {"datastack": args.datastack, "timestamp": moment_text(moment), "expires_on": moment_text(expires)}
    version = _run_job(runtime, CREATE_VERSION, payload, args.queue)
    if version is not None:
        print(f"version {version['version']} of {args.datastack} is available (frozen at {version['time_stamp']})")
    return 0


def _run_job(runtime, kind: str, payload: dict, queue_only: bool, progress: Callable[[str], None] | None = None, submitted_by: str | None = None):
    """Run a job here with its progress shown (printed, or given to ``progress``), or with
    ``queue_only`` leave it to a serving process or `opencave worker`. Its result, or None when
    only queued. A job run here starts once: if this command is killed, the work is discarded,
    not finished elsewhere."""
    if queue_only:
        job = runtime.jobs.submit(kind, payload, submitted_by=submitted_by)
        print(f"queued job {job.id} ({kind}); follow it with `opencave jobs show {job.id}`")
        return None
    job = runtime.job_runner.run_here(kind, payload, progress=progress or (lambda m: print(m, flush=True)), submitted_by=submitted_by)
    if job.error is not None:
        job.error.raise_()
    return job.result


class _Bars:
    """A job's progress on stderr: its ``Step``s as bars (one a phase; a new phase closes the
    bars before it), its other messages as lines."""

    def __init__(self) -> None:
        self.bars: dict = {}

    def __call__(self, message: str) -> None:
        from tqdm import tqdm

        from opencave.services.jobs.progress import Step

        if not isinstance(message, Step):
            print(message, file=sys.stderr, flush=True)
            return
        bar = self.bars.get(message.phase)
        if bar is None:
            self.close()
            look = {"bar_format": "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"} if message.unit == "%" else {"unit": f" {message.unit}", "unit_scale": True}
            bar = self.bars[message.phase] = tqdm(total=message.total, desc=message.phase, file=sys.stderr, **look)
        bar.update(message.done - bar.n)
        if message.done >= message.total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_materialize_list(args) -> int:
    runtime = _materializing_runtime(args)
    versions = runtime.materializer.registry.list(args.datastack, include_expired=True)
    _print_rows([{k: v for k, v in version.to_json().items() if k not in ("id", "datastack", "is_merged")} for version in versions])
    return 0


def cmd_materialize_expire(args) -> int:
    dropped = _materializing_runtime(args).materializer.expire()
    print("\n".join(f"expired version {v} of {d}" for d, v in dropped) or "no version has expired")
    return 0


def cmd_materialize_keep(args) -> int:
    runtime = _materializing_runtime(args)
    expires = _moment(args.until)
    version = runtime.materializer.registry.set_expiry(args.datastack, args.version, expires)
    print(f"version {version.version} of {args.datastack} expires {version.to_json()['expires_on'] or 'never'}")
    return 0


# -- data in and out ------------------------------------------------------------------------------
def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``NAME=VALUE`` arguments as a dict (SystemExit naming the malformed one)."""
    out = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"error: {option} takes NAME=VALUE, got {value!r}")
        out[name.strip()] = rest.strip()
    return out


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def cmd_import_version(args) -> int:
    from opencave.services.jobs.kinds import IMPORT_VERSION, moment_text

    runtime = _materializing_runtime(args)
    source = str(Path(args.source).resolve()) if Path(args.source).exists() else args.source  # workers may run elsewhere
    options = dict(
        version=args.version,
        timestamp=moment_text(_moment(args.timestamp)),
        schemas=_pairs(args.schema, "--schema"),
        voxel_resolution=args.voxel_resolution,
        tables=_names(args.tables),
        dataset=args.dataset,
        aligned_volume=args.aligned_volume,
        image_source=args.image_source,
        segmentation_source=args.segmentation_source,
    )
    answer = _run_job(runtime, IMPORT_VERSION, {"datastack": args.datastack, "source": source, "options": options}, args.queue)
    if answer is None:
        return 0
    version = runtime.materializer.registry.version(args.datastack, answer["version"])
    tables = runtime.materializer.registry.tables(version) + runtime.materializer.registry.tables(version, "view")
    print(f"imported version {version.version} of {args.datastack}: {len(tables)} tables and views, {sum(t.row_count for t in tables):,} rows")
    return 0


def cmd_import_table(args) -> int:
    from opencave.services.jobs.kinds import IMPORT_TABLE
    from opencave.services.transfer.table_import import parse_renames
    from opencave.services.transfer.table_import_job import files_payload, import_options

    runtime = _runtime(args)
    user = runtime.accounts.get_user_by_email(args.user or runtime.first_admin_email())
    options = import_options(
        schema=args.schema,
        user_id=str(user.id),
        description=args.description,
        voxel_resolution=args.voxel_resolution,
        reference_table=args.reference_table,
        renames=parse_renames(args.columns),
        on_error=args.on_error,
    )
    payload = files_payload(args.datastack, args.table, args.files, options)
    bars = _Bars()
    try:
        result = _run_job(runtime, IMPORT_TABLE, payload, args.queue, progress=bars, submitted_by=str(user.id))
    finally:
        bars.close()
    if result is None:
        return 0
    for problem in result["problems"] if result["skipped"] else []:
        print(f"  skipped: {problem}", file=sys.stderr)
    extra = f", {result['skipped']:,} bad rows skipped" if result["skipped"] else ""
    extra += f", {result['not_valid']:,} rows marked not valid left out" if result["not_valid"] else ""
    ids = f" (ids {result['first_id']}..{result['last_id']})" if result["rows"] else ""
    created = "new " if result["created_table"] else ""
    print(f"imported {result['rows']:,} rows into {created}table {result['table_name']} of {args.datastack}{ids}{extra} in {result['seconds']:.1f} s")
    return 0


def _shared_location(name: str | None) -> str | None:
    from opencave.services.transfer.inputs import shared_name

    return None if name is None else shared_name(name)


def cmd_ingest_segmentation(args) -> int:
    from opencave.services.ingest.service import IngestRequest
    from opencave.services.jobs.kinds import INGEST_SEGMENTATION

    runtime = _runtime(args)
    request = IngestRequest(
        name=args.name,
        watershed=_shared_location(args.watershed),
        agglomeration=_shared_location(args.agglomeration),
        edges=_shared_location(args.edges),
        threshold=args.threshold,
        image=_shared_location(args.image),
        chunk_size=tuple(args.chunk_size) if args.chunk_size else None,
        layers=args.layers,
        grant=tuple(args.grant or ()),
        workers=args.processes,
        run_id=secrets.token_hex(8),  # a start of the job after a crash finds its own finished work
    )
    bars = _Bars()
    try:
        result = _run_job(runtime, INGEST_SEGMENTATION, request.to_json(), args.queue, progress=bars)
    finally:
        bars.close()
    if result is None:
        return 0
    verb = "completed the registration of" if result["resumed"] else "ingested"
    print(
        f"{verb} datastack {result['name']}: {result['n_objects']:,} objects in {result['n_supervoxels']:,} supervoxels "
        f"({result['n_voxels']:,} voxels, {result['seconds']:.1f} s); world in {result['world_dir']}"
    )
    if not request.grant:
        print(f"only admins see it yet; share it with `opencave permission grant GROUP {result['name']} view` (and edit)")
    return 0


def cmd_export(args) -> int:
    from tqdm import tqdm

    from opencave.services.transfer.export import VersionExporter

    runtime = _runtime(args)
    bars: dict[str, tqdm] = {}

    def progress(entry, rows: int) -> None:
        bar = bars.get(entry.name)
        if bar is None:
            bar = bars[entry.name] = tqdm(total=entry.row_count, desc=entry.name, unit=" rows", unit_scale=True, file=sys.stderr)
        bar.update(rows - bar.n)
        if rows >= entry.row_count:
            bar.close()  # one bar at a time on the terminal

    tables = [n.strip() for n in args.tables.split(",") if n.strip()] if args.tables is not None else None
    try:
        summary = VersionExporter(runtime.materialize).export(
            args.datastack, args.version, args.out, args.format, tables=tables, progress=progress
        )
    finally:
        for bar in bars.values():
            bar.close()
    for table in summary.tables:
        print(f"  {table.kind} {table.name}: {table.rows:,} rows, {len(table.files)} file(s), {table.bytes / 1e6:,.1f} MB")
    rate = summary.rows / summary.seconds if summary.seconds else 0
    print(
        f"exported version {summary.version} of {summary.datastack} ({summary.format}) to {summary.out}: "
        f"{sum(t.kind == 'table' for t in summary.tables)} table(s), {sum(t.kind == 'view' for t in summary.tables)} view(s), "
        f"{summary.rows:,} rows, {summary.bytes / 1e6:,.1f} MB in {summary.seconds:.1f} s ({rate:,.0f} rows/s)"
    )
    return 0


# -- skeletons ----------------------------------------------------------------------------------
def cmd_skeleton_refusals(args) -> int:
    runtime = _runtime(args)
    rows = runtime.skeletons.store.refusals(args.datastack)
    _print_rows([{"datastack": d, "root_id": r} for d, r in rows])
    return 0


def cmd_skeleton_refuse(args) -> int:
    added = _runtime(args).skeletons.refuse(args.datastack, args.root_id)
    print(f"root {args.root_id} of {args.datastack} {'is now' if added else 'was already'} on the refusal list")
    return 0


def cmd_skeleton_unrefuse(args) -> int:
    removed = _runtime(args).skeletons.unrefuse(args.datastack, args.root_id)
    print(f"root {args.root_id} of {args.datastack} {'removed from' if removed else 'was not on'} the refusal list")
    return 0


def cmd_setup_token(args) -> int:
    from opencave.client import CAVEclient

    CAVEclient.setup_token(args.server, open=not args.no_open)
    return 0


# -- mirror -------------------------------------------------------------------------------------
def cmd_mirror(args) -> int:
    from tqdm import tqdm

    from opencave.services.transfer.mirror import mirror

    runtime = _runtime(args)
    bars: dict[str, tqdm] = {}

    def rows(table: str, done: int, total: int) -> None:
        bar = bars.get(table)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[table] = tqdm(total=total, desc=table, unit=" rows", unit_scale=True, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    tables = [t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else None
    try:
        version = mirror(
            runtime, args.server_url, args.datastack, version=args.version, tables=tables, name=args.name,
            token=args.token, progress=lambda m: tqdm.write(m, file=sys.stderr), on_rows=rows,
        )
    finally:
        for bar in bars.values():
            bar.close()
    print(f"version {version.version} of {args.name or args.datastack} is available (frozen at {version.to_json()['time_stamp']})")
    return 0


def cmd_doctor(args) -> int:
    from opencave.client.doctor import run_doctor

    return run_doctor(args.server, as_json=args.json)


def cmd_cache_ls(args) -> int:
    from opencave.client.cache import cli_ls

    return cli_ls(args)


def cmd_cache_rm(args) -> int:
    from opencave.client.cache import cli_rm

    return cli_rm(args)


def cmd_worker(args) -> int:
    """Run queued jobs until stopped (SIGTERM or Ctrl-C): a job still running then is taken up
    again by another process."""
    import signal

    from opencave.services.jobs import JobRunner
    from opencave.services.jobs.kinds import job_kinds

    runtime = _runtime(args)
    kinds = _names(args.kinds)
    try:
        runner = JobRunner(runtime.jobs, job_kinds(runtime), threads=args.threads, only=kinds)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: runner.stop(0))
    print(f"opencave worker: {args.threads} thread(s) running {', '.join(runner.handled)} jobs", flush=True)
    try:
        runner.serve_forever()
    except KeyboardInterrupt:
        runner.stop(0)
    runtime.close()
    return 0


def cmd_jobs_ls(args) -> int:
    runtime = _runtime(args)
    rows = [
        {
            "id": job.id,
            "kind": job.kind,
            "status": job.status,
            "created": job.created.strftime("%Y-%m-%d %H:%M:%S"),
            "attempts": job.attempts,
            "progress": (job.error.message if job.error else job.progress or "")[:60],
        }
        for job in runtime.jobs.list(status=args.status, kind=args.kind, limit=args.limit)
    ]
    _print_rows(rows)
    return 0


def cmd_jobs_show(args) -> int:
    import json

    runtime = _runtime(args)
    print(json.dumps(runtime.jobs.get(args.job_id).to_json(), indent=2))
    return 0


def cmd_jobs_cancel(args) -> int:
    runtime = _runtime(args)
    job = runtime.jobs.cancel(args.job_id)
    print(f"job {job.id} is {job.status}")
    return 0


# -- parser ---------------------------------------------------------------------------------------
def _command(sub, name: str, func: Callable, help: str, storage: bool = True) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(func=func)
    if storage:
        _storage_options(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opencave", description="A complete, self-hostable CAVE.")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _command(top, "serve", cmd_serve, "run the server (sets up an empty data directory with the demo datastack)")
    serve.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument("--public-url", help="address clients use to reach this server, if not http://HOST:PORT")
    serve.add_argument("--workers", type=int, default=1, help="server processes (share one database)")
    serve.add_argument("--no-auth", action="store_true", help="switch authentication off (local testing only)")
    serve.add_argument("--no-access-log", action="store_true", help="do not log every request")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--materialize-every", type=float, metavar="HOURS", help="create a version of every datastack this often")
    serve.add_argument("--version-expires-after", type=float, metavar="DAYS", help="scheduled versions expire after this many days (default never)")
    serve.add_argument("--row-limit", type=int, help="cap query answers at this many rows (default: no cap; a cut answer says so)")
    serve.add_argument(
        "--job-threads", type=int, default=None, metavar="N",
        help="threads of each server process that run queued jobs (default 1; 0: leave them to `opencave worker`)",
    )
    serve.add_argument(
        "--cors-origins",
        help="web origins browsers may call the API from, comma-separated, or '' for none "
        "(default: $OPENCAVE_CORS_ORIGINS or '*': any, e.g. Neuroglancer on its own site)",
    )
    serve.add_argument(
        "--redirect-origins",
        help="other web origins the login may send a token to, comma-separated, besides this server "
        "and the datastacks' viewer sites (default: $OPENCAVE_REDIRECT_ORIGINS)",
    )
    serve.add_argument(
        "--viewer-site",
        help="Neuroglancer of the datastacks opencave creates, e.g. the demo's (default: $OPENCAVE_VIEWER_SITE "
        "or the bundled viewer, {local_server}/neuroglancer); change an existing one with `opencave datastack update`",
    )

    worker = _command(top, "worker", cmd_worker, "run queued jobs (versions, imports, skeletons) beside the servers, over the same database")
    worker.add_argument("--threads", type=int, default=1, help="jobs run at once (default 1)")
    worker.add_argument("--kinds", help="only these kinds of job, comma-separated (default: all)")
    jobs = top.add_parser("jobs", help="the queue of background jobs").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(jobs, "ls", cmd_jobs_ls, "list jobs, newest first")
    p.add_argument("--status", choices=["queued", "running", "done", "failed", "cancelled"])
    p.add_argument("--kind")
    p.add_argument("--limit", type=int, default=50)
    p = _command(jobs, "show", cmd_jobs_show, "a job's arguments, progress, result or error")
    p.add_argument("job_id", type=int)
    p = _command(jobs, "cancel", cmd_jobs_cancel, "cancel a queued job")
    p.add_argument("job_id", type=int)

    user = top.add_parser("user", help="user accounts").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(user, "add", cmd_user_add, "create a user (joins the 'default' group)")
    p.add_argument("email")
    p.add_argument("--name")
    p.add_argument("--admin", action="store_true", help="make the user a superadmin")
    p.add_argument("--password", help="password for logging in to the web pages (at least 8 characters)")
    _command(user, "list", cmd_user_list, "list users")
    p = _command(user, "set-password", cmd_user_password, "set a user's login password (typed at a prompt, or read from stdin)")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p = _command(user, "admin", cmd_user_admin, "make a user a superadmin (or --revoke)")
    p.add_argument("email")
    p.add_argument("--revoke", action="store_true")
    p = _command(user, "remove", cmd_user_remove, "delete a user and their tokens")
    p.add_argument("email")
    p = _command(user, "service-account", cmd_service_account_add, "create a service account and print its token")
    p.add_argument("name")
    p.add_argument("--parent", required=True, help="e-mail of the owning user")

    token = top.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(token, "create", cmd_token_create, "create a token and print it (only the token, on one line)")
    p.add_argument("email")
    p.add_argument("--description", default="command line")
    p = _command(token, "list", cmd_token_list, "list a user's tokens (shortened)")
    p.add_argument("email")
    p = _command(token, "revoke", cmd_token_revoke, "revoke a token")
    p.add_argument("token")

    group = top.add_parser("group", help="groups").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(group, "add", cmd_group_add, "create a group")
    p.add_argument("name")
    _command(group, "list", cmd_group_list, "list groups")
    p = _command(group, "members", cmd_group_members, "list a group's members")
    p.add_argument("group")
    p = _command(group, "add-user", cmd_group_add_user, "add a user to a group")
    p.add_argument("group")
    p.add_argument("email")
    p.add_argument("--admin", action="store_true", help="make the user a group admin")
    p = _command(group, "remove-user", cmd_group_remove_user, "remove a user from a group")
    p.add_argument("group")
    p.add_argument("email")

    dataset = top.add_parser("dataset", help="datasets").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(dataset, "add", cmd_dataset_add, "create a dataset")
    p.add_argument("name")
    _command(dataset, "list", cmd_dataset_list, "list datasets")
    p = _command(dataset, "map", cmd_dataset_map, "put a service resource (datastack, aligned_volume, pychunkedgraph) in a dataset")
    p.add_argument("namespace", choices=["datastack", "aligned_volume", "pychunkedgraph"])
    p.add_argument("resource")
    p.add_argument("dataset")
    p = _command(dataset, "admin", cmd_dataset_admin, "make a user an admin of a dataset")
    p.add_argument("dataset")
    p.add_argument("email")

    permission = top.add_parser("permission", help="dataset permissions of groups").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    for name, func, text in (("grant", cmd_permission_grant, "grant"), ("revoke", cmd_permission_revoke, "revoke")):
        p = _command(permission, name, func, f"{text} a group a permission (view, edit, admin) on a dataset")
        p.add_argument("group")
        p.add_argument("dataset")
        p.add_argument("permission", choices=["view", "edit", "admin"])
    p = _command(permission, "list", cmd_permission_list, "list grants")
    p.add_argument("--dataset")

    tos = top.add_parser("tos", help="terms of service").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(tos, "add", cmd_tos_add, "create terms of service, optionally required for a dataset")
    p.add_argument("name")
    p.add_argument("--text")
    p.add_argument("--file")
    p.add_argument("--dataset", help="require acceptance for this dataset")

    datastack = top.add_parser("datastack", help="datastacks").add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(datastack, "list", cmd_datastack_list, "list datastacks")
    p = _command(datastack, "add", cmd_datastack_add, "register a datastack (and its aligned volume) in a dataset")
    p.add_argument("name")
    p.add_argument("--dataset", required=True, help="dataset whose permissions govern the datastack")
    p.add_argument("--aligned-volume", required=True)
    p.add_argument("--image-source", help="image source of a new aligned volume, e.g. precomputed://https://…")
    p.add_argument("--viewer-resolution", type=float, nargs=3, metavar=("X", "Y", "Z"))
    p = _command(datastack, "update", cmd_datastack_update, "change fields of a datastack, e.g. its --viewer-site")
    p.add_argument("name")
    p = _command(datastack, "mirror", cmd_datastack_mirror, "add an image mirror to an aligned volume")
    p.add_argument("aligned_volume")
    p.add_argument("name")
    p.add_argument("image_source")
    p.add_argument("--description")
    for action in ("add", "update"):
        p = datastack.choices[action]
        for option in DATASTACK_OPTIONS:
            p.add_argument("--" + option.replace("_", "-"), help="use {local_server} for this server's address" if option.endswith(("source", "site")) else None)

    demo = top.add_parser("demo", help="synthetic datastacks").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(demo, "create", cmd_demo_create, "build a synthetic world and register it as a datastack")
    p.add_argument("name", help="name of the datastack, its dataset and its chunkedgraph table")
    p.add_argument("--size", choices=["small", "medium", "large"], default="small")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-annotations", action="store_true", help="only the segmentation: no annotation tables or versions")

    mat = top.add_parser("materialize", help="materialized versions").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(mat, "create", cmd_materialize_create, "freeze every table of a datastack as a new version")
    p.add_argument("datastack")
    p.add_argument("--timestamp", help="the moment to freeze (ISO 8601, default now); any past moment works")
    p.add_argument("--expires-after", type=float, metavar="DAYS", help="let the version expire this many days after its timestamp (default never)")
    p.add_argument("--queue", action="store_true", help="only queue the job: a serving process or `opencave worker` builds it")
    p = _command(mat, "list", cmd_materialize_list, "list a datastack's versions")
    p.add_argument("datastack")
    _command(mat, "expire", cmd_materialize_expire, "drop the files of versions past their expiry")
    p = _command(mat, "keep", cmd_materialize_keep, "change when a version expires")
    p.add_argument("datastack")
    p.add_argument("version", type=int)
    p.add_argument("--until", help="new expiry time (ISO 8601); omit to keep the version forever")

    imp = top.add_parser("import", help="bring data in: annotation tables, released versions").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(imp, "version", cmd_import_version, "import a released version (static export, version package, Parquet/Feather files) with its root ids as published")
    p.add_argument("datastack", help="datastack to hold the version (created, with its aligned volume and dataset, when missing)")
    p.add_argument("source", metavar="DIR_OR_URL", help="a local folder or an fsspec/cloud-files URL")
    p.add_argument("--version", type=int, help="the version's number (default: the package's; required for a static export)")
    p.add_argument("--timestamp", help="when the version was frozen, ISO 8601 UTC (default: the package's; required for a static export)")
    p.add_argument("--schema", action="append", metavar="TABLE=SCHEMA", help="the schema of a table (default: the package's, or the one registry schema its columns fit); repeat per table")
    p.add_argument("--voxel-resolution", type=float, nargs=3, metavar=("X", "Y", "Z"), help="nm per voxel of the positions in the files (default: the package's metadata)")
    p.add_argument("--tables", metavar="A,B", help="import only these tables and views")
    p.add_argument("--dataset", help="dataset of a new datastack (default: the datastack's name)")
    p.add_argument("--aligned-volume", help="aligned volume of a new datastack (default: the datastack's name)")
    p.add_argument("--image-source", help="image source of a new aligned volume, e.g. precomputed://gs://…")
    p.add_argument("--segmentation-source", help="segmentation source of a new datastack (e.g. the deployment it came from)")
    p.add_argument("--queue", action="store_true", help="only queue the job: a serving process or `opencave worker` runs it (the source must be reachable there)")

    p = _command(imp, "table", cmd_import_table, "import rows into a live annotation table (created when missing) from CSV, CSV.gz, Parquet, Feather or a static export")
    p.add_argument("datastack", help="the datastack whose aligned volume holds the table")
    p.add_argument("table", help="the annotation table (created when it does not exist; rows are added to an existing one)")
    p.add_argument("files", nargs="+", metavar="FILE", help="local paths, directories of Parquet/Feather parts, or fsspec/cloud-files URLs")
    p.add_argument("--schema", required=True, help="the table's schema, e.g. synapse (must be the existing table's)")
    p.add_argument("--description", help="what the table holds (required when the import creates it)")
    p.add_argument("--voxel-resolution", type=float, nargs=3, metavar=("X", "Y", "Z"), help="nm per voxel of the positions in the files (required when the import creates the table)")
    p.add_argument("--reference-table", help="the table a reference schema's target_id points into (when the import creates the table)")
    p.add_argument("--columns", metavar="NEW=OLD,…", help="rename columns of the files to the schema's names")
    p.add_argument("--on-error", choices=["reject", "skip"], default="reject", help="reject: import nothing when any row is bad (default); skip: leave bad rows out")
    p.add_argument("--user", metavar="EMAIL", help="the user who owns a new table (default: the first superadmin)")
    p.add_argument("--queue", action="store_true", help="only queue the job: a serving process or `opencave worker` runs it (the files must be reachable there)")

    ingest = top.add_parser("ingest", help="bring your own segmentation in as a proofreadable datastack").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(
        ingest,
        "segmentation",
        cmd_ingest_segmentation,
        "ingest a watershed (and its agglomeration) into a new datastack: chunkedgraph, aligned volume and dataset NAME",
    )
    p.add_argument("name", metavar="NAME", help="the new datastack, aligned volume, dataset and chunkedgraph")
    p.add_argument("--watershed", required=True, metavar="URL", help="Neuroglancer precomputed segmentation: file://, precomputed://, gs://, s3://, https:// or a local path")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--agglomeration", metavar="FILE", help="supervoxel → segment mapping (Parquet, CSV or npz; columns supervoxel, segment)")
    group.add_argument("--edges", metavar="FILE", help="supervoxel edges (Parquet, CSV or npz; columns sv1, sv2, affinity[, area])")
    p.add_argument("--threshold", type=float, metavar="T", help="with --edges: join only edges of affinity above T (default: every listed edge)")
    p.add_argument("--image", metavar="URL", help="the EM image layer to show with it (precomputed; local ones are served by this server)")
    p.add_argument("--chunk-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="graph chunk size in voxels (default: the watershed's own, or 256 256 64)")
    p.add_argument("--layers", type=int, metavar="N", help="layers of the graph (default: the fewest the chunk grid needs)")
    p.add_argument("--grant", action="append", metavar="GROUP", help="let this group view and edit it (repeatable; e.g. default for every user)")
    p.add_argument("--processes", type=int, metavar="N", help="worker processes reading the volume (default: one per CPU for large volumes)")
    p.add_argument("--queue", action="store_true", help="only queue the job: a serving process or `opencave worker` runs it (the inputs must be reachable there)")

    p = _command(top, "export", cmd_export, "write a version as open files: Parquet datasets or the CAVE static-export CSV layout")
    p.add_argument("datastack")
    p.add_argument("--version", type=int, required=True, help="the version to export")
    p.add_argument("--format", choices=["parquet", "cave-csv"], default="parquet", help="parquet: a version package, one Parquet dataset per table and view (default); cave-csv: {table}_merged.csv.gz and {table}_merged_header.csv per table, as CAVE publishes versions")
    p.add_argument("out", metavar="OUT", help="directory to write (must not exist or be empty)")
    p.add_argument("--tables", metavar="A,B", help="export only these tables and views (default: all)")

    skel = top.add_parser("skeleton", help="the skeleton service's refusal list").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _command(skel, "refusals", cmd_skeleton_refusals, "list the root ids the skeleton service refuses")
    p.add_argument("datastack", nargs="?", help="only this datastack's")
    for name, func, summary in (("refuse", cmd_skeleton_refuse, "refuse to skeletonize a root id"), ("unrefuse", cmd_skeleton_unrefuse, "skeletonize a refused root id again")):
        p = _command(skel, name, func, summary)
        p.add_argument("datastack")
        p.add_argument("root_id", type=int)

    p = _command(top, "mirror", cmd_mirror, "copy a version of a datastack from a CAVE server into this store, past its row cap; rerun to resume")
    p.add_argument("server_url", help="the CAVE server, e.g. https://global.daf-apis.com or http://127.0.0.1:8765")
    p.add_argument("datastack", help="the datastack on that server")
    p.add_argument("--version", type=int, help="the version to copy (default: the newest)")
    p.add_argument("--tables", help="only these tables and views, comma-separated (default: all)")
    p.add_argument("--as", dest="name", metavar="NAME", help="the datastack here (default: the same name)")
    p.add_argument("--token", help="the token for that server (default: its token file, as caveclient)")

    p = _command(top, "setup-token", cmd_setup_token, "save a token for a server interactively (CAVEclient.setup_token)", storage=False)
    p.add_argument("server", help="server address, e.g. http://127.0.0.1:8765")
    p.add_argument("--no-open", action="store_true", help="do not open the tokens page in a browser")

    p = _command(top, "doctor", cmd_doctor, "check which token goes to which server, whether it is accepted, terms to accept, datastacks and version expiries", storage=False)
    p.add_argument("server", nargs="?", help="only this server (default: every server a token or datastack is saved for)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")

    cache = top.add_parser("cache", help="the client's local query cache").add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, func, summary in (("ls", cmd_cache_ls, "list cached answers"), ("rm", cmd_cache_rm, "remove cached answers")):
        p = _command(cache, name, func, summary, storage=False)
        p.add_argument("--dir", help="the cache directory (default: $OPENCAVE_CACHE_DIR, else ~/.cache/opencave)")
        p.add_argument("--server", help="only answers from this server")
        p.add_argument("--datastack", help="only answers of this datastack")
        if name == "ls":
            p.add_argument("--json", action="store_true", help="print JSON lines")
        else:
            p.add_argument("entries", nargs="*", metavar="KEY", help="entries to remove (key prefixes, as `cache ls` shows)")
            p.add_argument("--all", action="store_true", help="remove every entry that matches the other options")
            p.add_argument("--older-than", type=float, metavar="DAYS", help="only entries last used more than DAYS ago")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OpencaveError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        problem = _storage_problem(error, args)
        if problem is None:
            raise
        print(problem, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
