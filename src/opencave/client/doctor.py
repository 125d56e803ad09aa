"""``opencave doctor [SERVER]``: why a client cannot reach its data, and what to do about it.

For every server the user has set up (a token file, a datastack mapped to it, or the default
server), the doctor says which token a client sends there and where it comes from, whether the
server answers and its auth service accepts the token, which terms of service are still to be
accepted, which datastacks the token can see and when their materialized versions expire —
each problem with its fix. It uses only CAVE API endpoints (auth ``user/me``, info
``datastacks`` and ``datastack/full``, materialize ``versions`` metadata), so it works against
any CAVE deployment, not just ``opencave serve``.

Token safety: a token is sent only where a client would send it — the server whose file it
comes from, or (the generic ``cave-secret.json``) the servers without a file of their own, as
caveclient does — plus, for materialize, the datastack's local server named by that server's
info service, as ``CAVEclient`` does. A token is never printed: at most its first 4 characters
and its length.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from ..wire.endpoints import AUTH, INFO, MATERIALIZE
from ..wire.tokens import DEFAULT_SERVER_FILE, SECRETS_DIR, server_netloc
from .auth import AuthClient, default_token_file, deprecated_token_files, load_token, same_server, server_token_filename
from .datastack_lookup import read_map
from .default_server import ENVIRONMENT_VARIABLE, default_server_address
from .errors import TokenFileError
from .session import Timeout

DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)
EXPIRY_WARNING_DAYS = 7
SERVER_FILE_SUFFIX = "-cave-secret.json"
_AUTH = AUTH.for_version(1)
_INFO = INFO.for_version(2)

PROBLEM, WARNING, NOTE = "problem", "warning", "note"
_LEVELS = (PROBLEM, WARNING, NOTE)
_TELL_ADMINS = "try again later; if it persists, tell the server's administrators"


# --------------------------------------------------------------------------------------------
# What is reported


@dataclass
class Finding:
    """One thing found: a ``problem`` (exit status 1), a ``warning`` or a ``note``, with its fix."""

    level: str
    code: str
    message: str
    fix: str = ""


@dataclass
class TokenReport:
    """Which token goes to a server, described without revealing it."""

    source: str | None  # "server file", "generic file", "deprecated file" or None
    file: str | None = None
    prefix: str | None = None
    length: int | None = None


@dataclass
class VersionReport:
    version: int
    time_stamp: str | None
    expires_on: str | None
    days_left: float | None = None


@dataclass
class DatastackReport:
    name: str
    local_server: str | None = None
    versions: list[VersionReport] | None = None
    status: str = "ok"  # "ok", "terms of service", "no permission", "error"
    detail: str = ""
    terms: dict[str, Any] | None = None  # tos_id, tos_name, tos_form_url of terms to accept


@dataclass
class ServerReport:
    server: str
    why: list[str]
    token: TokenReport
    reachable: bool | None = None
    user: dict[str, Any] | None = None
    datastacks: list[DatastackReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Which servers, which tokens


@dataclass
class _Candidate:
    address: str
    why: list[str] = field(default_factory=list)
    file_only: bool = True  # known only from a token file: perhaps a datastack's local server
    scheme_assumed: bool = False


def _default_server_origin() -> str:
    if os.environ.get(ENVIRONMENT_VARIABLE):
        return f"the default server (${ENVIRONMENT_VARIABLE})"
    if os.path.isfile(os.path.expanduser(DEFAULT_SERVER_FILE)):
        return f"the default server (remembered in {DEFAULT_SERVER_FILE})"
    return "the default server (built in)"


def _token_file_netlocs() -> list[str]:
    """host[:port] of every ``<host>-cave-secret.json`` in the secrets directory."""
    pattern = os.path.join(os.path.expanduser(SECRETS_DIR), "*" + SERVER_FILE_SUFFIX)
    return sorted(os.path.basename(path)[: -len(SERVER_FILE_SUFFIX)] for path in glob.glob(pattern))


def _normalise(address: str, known: list[str]) -> tuple[str, bool]:
    """A full address: as given when it has a scheme, else the known address of that host
    (from the datastack map or the default server), else ``https://`` as caveclient assumes —
    the second value says the scheme was assumed."""
    address = address.rstrip("/")
    if "://" in address:
        return address, False
    for other in known:
        if same_server(other, address) and "://" in other:
            return other.rstrip("/"), False
    return "https://" + address, True


def _mapping() -> dict[str, str]:
    """The datastack-to-server map, without entries that are not addresses."""
    return {ds: target for ds, target in read_map().items() if isinstance(target, str) and target}


def _candidates(server: str | None) -> list[_Candidate]:
    """The servers to check, in order: given, default, mapped from datastacks, token files."""
    mapping = _mapping()
    default = default_server_address()
    known = [default, *mapping.values()]
    found: dict[str, _Candidate] = {}

    def add(address: str, why: str, file_only: bool = False) -> None:
        address, assumed = _normalise(address, known)
        key = server_netloc(address).lower()
        entry = found.setdefault(key, _Candidate(address, scheme_assumed=assumed))
        entry.why.append(why)
        entry.file_only = entry.file_only and file_only

    if server is not None:
        add(server, "given on the command line")
        return list(found.values())
    add(default, _default_server_origin())
    for address in sorted(set(mapping.values())):
        names = sorted(ds for ds, target in mapping.items() if target == address)
        add(address, f"{len(names)} datastack(s) mapped to it in the datastack-to-server map")
    for netloc in _token_file_netlocs():
        add(netloc, "has a token file", file_only=True)
    return list(found.values())


def _describe_token(token: str | None, source: str | None, path: str | None) -> TokenReport:
    if token is None:
        return TokenReport(source=None)
    return TokenReport(source=source, file=path, prefix=token[:4], length=len(token))


def _token_for(address: str) -> tuple[str | None, TokenReport, list[Finding]]:
    """The token ``CAVEclient(server_address=address)`` sends, where it comes from, and what is
    wrong with that choice. ``AuthClient`` picks the token, so the doctor cannot disagree with
    the client; the file it came from is found with the same lookup order."""
    findings: list[Finding] = []
    own = server_token_filename(address)
    generic = os.path.expanduser(default_token_file)
    path, source = (own, "server file") if os.path.isfile(own) else (generic, "generic file")
    logging.getLogger("opencave.client.auth").disabled = True  # its deprecation warning is a finding here
    try:
        token = AuthClient(server_address=address).token
    except TokenFileError as err:
        fix = f"fix or delete {path}, then run `opencave setup-token {address}`"
        return None, TokenReport(source=source, file=path), [Finding(PROBLEM, "token_file_unreadable", str(err), fix)]
    finally:
        logging.getLogger("opencave.client.auth").disabled = False
    if token is None:
        fix = f"run `opencave setup-token {address}` (tokens page: {_page('user_tokens_page', address)})"
        findings.append(Finding(PROBLEM, "no_token", f"no token is saved for {address}", fix))
        return None, TokenReport(source=None), findings
    if load_token(path) != token:
        path = next((p for p in map(os.path.expanduser, deprecated_token_files) if load_token(p) == token), None)
        source = "deprecated file"
        findings.append(
            Finding(
                WARNING,
                "deprecated_token_file",
                f"the token comes from the deprecated file {path}",
                f"run `opencave setup-token {address}` to save it in {own}",
            )
        )
    elif source == "generic file":
        findings.append(
            Finding(
                NOTE,
                "generic_token_file",
                f"{address} has no token file of its own: the generic token file {path} is sent to "
                "it (caveclient and opencave send that file to every server without its own file)",
                f"run `opencave setup-token {address}` to give it a file of its own",
            )
        )
    return token, _describe_token(token, source, path), findings


def _page(name: str, address: str) -> str:
    return _AUTH[name].format_map({AUTH.server_key: address.rstrip("/")})


# --------------------------------------------------------------------------------------------
# Talking to a server


class _Server:
    """GET requests to one server (and its datastacks' local servers) with one token,
    no retries and a timeout: a doctor must answer quickly, whatever the network does."""

    def __init__(self, token: str | None, timeout: Timeout):
        self.session = requests.Session()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout

    def get(self, url: str) -> requests.Response:
        return self.session.get(url, headers=self.headers, timeout=self.timeout, allow_redirects=False)

    def close(self) -> None:
        self.session.close()


def _body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _message(response: requests.Response) -> str:
    body = _body(response)
    if isinstance(body, dict) and body.get("message"):
        return f"{response.status_code}: {body['message']}"
    return f"{response.status_code} {response.reason or ''}".strip()


def _missing_tos(response: requests.Response) -> dict[str, Any] | None:
    body = _body(response)
    if response.status_code == 403 and isinstance(body, dict) and body.get("error") == "missing_tos":
        return body.get("data") or {}
    return None


def _unreachable_fix(address: str, scheme_assumed: bool) -> str:
    scheme_hint = ""
    if scheme_assumed:
        scheme_hint = (
            "; https:// was assumed (only the host is known, from its token file): "
            f"if it speaks plain HTTP, run `opencave doctor http://{server_netloc(address)}`"
        )
    return f"check the address, the network (VPN, proxy) and that the server runs{scheme_hint}"


def _reason(err: requests.RequestException) -> str:
    """A short cause of a failed request (requests' own messages run to several lines)."""
    text = str(err)
    if isinstance(err, requests.exceptions.SSLError):
        return "the TLS handshake failed (a plain-HTTP server, or a certificate problem)"
    if isinstance(err, requests.Timeout):
        return "no answer in time"
    for marker, reason in (
        ("NameResolutionError", "the host name does not resolve"),
        ("Name or service not known", "the host name does not resolve"),
        ("Connection refused", "connection refused (nothing listens there)"),
        ("No route to host", "no route to the host"),
    ):
        if marker in text:
            return reason
    return f"{type(err).__name__}: {text[:200]}"


def _check_auth(report: ServerReport, http: _Server, has_token: bool, scheme_assumed: bool) -> bool:
    """Whether the auth service accepts the token (the user is recorded); findings otherwise."""
    address = report.server
    try:
        response = http.get(_AUTH["get_me"].format_map({AUTH.server_key: address}))
    except requests.RequestException as err:
        report.reachable = False
        report.findings.append(
            Finding(PROBLEM, "unreachable", f"{address} cannot be reached: {_reason(err)}", _unreachable_fix(address, scheme_assumed))
        )
        return False
    report.reachable = True
    tokens_page = _page("user_tokens_page", address)
    if response.status_code == 200 and isinstance(_body(response), dict):
        me = _body(response)
        report.user = {key: me.get(key) for key in ("id", "name", "email", "admin") if key in me}
        return True
    if response.status_code in (401, 403) or 300 <= response.status_code < 400:
        if has_token:
            report.findings.append(
                Finding(
                    PROBLEM,
                    "token_rejected",
                    f"{address} does not accept the token {report.token.prefix}… from {report.token.file} ({_message(response)})",
                    f"create a token at {tokens_page} and save it with `opencave setup-token {address}`",
                )
            )
        return False
    if response.status_code >= 500:
        report.findings.append(
            Finding(PROBLEM, "server_error", f"{address}'s auth service fails ({_message(response)})", _TELL_ADMINS)
        )
        return False
    report.findings.append(
        Finding(
            PROBLEM,
            "no_auth_service",
            f"{address} answers, but not as a CAVE server: auth user/me gave {_message(response)}",
            "check the address: it must be a CAVE global server (the one whose tokens page you use)",
        )
    )
    return False


def _versions(http: _Server, materialize_server: str, datastack: str) -> list[VersionReport] | requests.Response:
    """The version metadata of a datastack (API 3, else 2), or the refusing response."""
    response = None
    for api in (3, 2):
        url = MATERIALIZE.for_version(api)["versions_metadata"].format_map(
            {MATERIALIZE.server_key: materialize_server.rstrip("/"), "datastack_name": datastack}
        )
        response = http.get(url)
        if response.status_code != 404:
            break
    assert response is not None
    body = _body(response)
    if response.status_code != 200 or not isinstance(body, list):
        return response
    now = dt.datetime.now(dt.timezone.utc)
    reports = []
    for meta in body:
        expires = meta.get("expires_on")
        left = None
        if expires:
            left = (_utc(expires) - now).total_seconds() / 86400
        reports.append(VersionReport(int(meta["version"]), meta.get("time_stamp"), expires, left))
    return sorted(reports, key=lambda v: v.version)


def _check_datastack(http: _Server, address: str, name: str) -> DatastackReport:
    report = DatastackReport(name)
    try:
        info = http.get(_INFO["datastack_info"].format_map({INFO.server_key: address, "datastack_name": name}))
        if info.status_code == 200:
            record = _body(info)
            report.local_server = (record.get("local_server") if isinstance(record, dict) else None) or None
            versions = _versions(http, report.local_server or address, name)
        else:
            versions = info
    except requests.RequestException as err:
        report.status, report.detail = "error", _reason(err)
        return report
    except (KeyError, TypeError, ValueError) as err:  # an answer not shaped as CAVE's
        report.status, report.detail = "error", f"unexpected answer: {type(err).__name__}: {err}"
        return report
    if isinstance(versions, list):
        report.versions = versions
        return report
    if versions.status_code == 404 and info.status_code == 200:
        # The datastack exists (info knows it) but materialize has no version of it.
        report.versions, report.detail = [], _message(versions)
        return report
    tos = _missing_tos(versions)
    if tos is not None:
        report.status = "terms of service"
        report.terms = {k: tos.get(k) for k in ("tos_id", "tos_name", "tos_form_url")}
    elif versions.status_code == 403:
        report.status, report.detail = "no permission", _message(versions)
    else:
        report.status, report.detail = "error", _message(versions)
    return report


def _datastack_findings(report: ServerReport, mapping: dict[str, str]) -> None:
    """Findings about the datastacks: terms, permissions, versions, the datastack map."""
    address = report.server
    terms: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for ds in report.datastacks:
        if ds.status == "terms of service":
            tos = ds.terms or {}
            terms.setdefault(str(tos.get("tos_form_url")), (tos, []))[1].append(ds.name)
        elif ds.status == "no permission":
            report.findings.append(
                Finding(
                    WARNING,
                    "no_permission",
                    f"datastack {ds.name} is listed but its data is refused ({ds.detail})",
                    "ask the server's administrators for access to its dataset",
                )
            )
        elif ds.status == "error":
            report.findings.append(
                Finding(PROBLEM, "datastack_error", f"datastack {ds.name} could not be checked ({ds.detail})", _TELL_ADMINS)
            )
        elif not ds.versions:
            report.findings.append(
                Finding(
                    WARNING,
                    "no_versions",
                    f"datastack {ds.name} has no materialized version: query_table has nothing to read"
                    + (f" ({ds.detail})" if ds.detail else ""),
                    "use live queries (client.materialize.live_query), or ask the administrators for a "
                    f"version (opencave: `opencave materialize create {ds.name}`)",
                )
            )
        else:
            for version in ds.versions:
                if version.days_left is not None and version.days_left <= EXPIRY_WARNING_DAYS:
                    when = "has expired" if version.days_left <= 0 else f"expires in {version.days_left:.1f} days"
                    report.findings.append(
                        Finding(
                            WARNING,
                            "version_expiring",
                            f"version {version.version} of {ds.name} {when} ({version.expires_on})",
                            "move analyses to a version that lasts, or ask the administrators to keep it "
                            f"(opencave: `opencave materialize keep {ds.name} {version.version} --until DATE`)",
                        )
                    )
    for url, (tos, names) in terms.items():
        report.findings.append(
            Finding(
                PROBLEM,
                "missing_tos",
                f"terms of service {tos.get('tos_name') or tos.get('tos_id')!r} not accepted: datastack(s) {', '.join(names)} refuse the token",
                f"open {url} in a browser, log in and accept them",
            )
        )
    listed = {ds.name for ds in report.datastacks}
    for name, target in sorted(mapping.items()):
        if same_server(target, address) and name not in listed:
            report.findings.append(
                Finding(
                    WARNING,
                    "mapped_not_listed",
                    f"datastack {name} is mapped to {address} in the datastack-to-server map, but the server does not list it",
                    "ask the administrators whether it was renamed, removed or is no longer yours to see; to forget it: "
                    '`python -c "from opencave.client.datastack_lookup import reset_server_address_cache; '
                    f"reset_server_address_cache('{name}')\"`",
                )
            )
        elif name in listed and not same_server(target, address):
            report.findings.append(
                Finding(
                    NOTE,
                    "mapped_elsewhere",
                    f"datastack {name} is listed here but CAVEclient('{name}') goes to {target} (datastack-to-server map)",
                    f"pass server_address='{address}' for this one",
                )
            )


def _check_local_files(report: ServerReport, token: str | None) -> set[str]:
    """cloud-volume reads a datastack's local-server token file for ``graphene://`` sources;
    it should hold the global server's token. Returns the local servers' host[:port]."""
    local: set[str] = set()
    for ds in report.datastacks:
        if not ds.local_server or same_server(ds.local_server, report.server):
            continue
        netloc = server_netloc(ds.local_server).lower()
        if netloc in local:
            continue
        local.add(netloc)
        saved = load_token(server_token_filename(ds.local_server))
        if token is not None and saved != token:
            what = "has no token file" if saved is None else "has a token file with another token"
            report.findings.append(
                Finding(
                    WARNING,
                    "local_server_token",
                    f"the local server {ds.local_server} of {ds.name} {what}: cloud-volume will not send {report.server}'s token there",
                    f"run `opencave setup-token {report.server}` (it shares the token with the datastacks' local servers)",
                )
            )
    return local


def check_server(
    address: str, why: list[str], timeout: Timeout = DEFAULT_TIMEOUT, scheme_assumed: bool = False
) -> tuple[ServerReport, set[str]]:
    """Everything the doctor knows about one server; also the host[:port] of its local servers."""
    token, token_report, findings = _token_for(address)
    report = ServerReport(server=address, why=why, token=token_report, findings=findings)
    http = _Server(token, timeout)
    try:
        if not _check_auth(report, http, token is not None, scheme_assumed):
            return report, set()
        if token is None:  # a server without authentication: no token is needed
            report.findings = [f for f in report.findings if f.code != "no_token"]
        try:
            names = http.get(_INFO["datastacks"].format_map({INFO.server_key: address}))
        except requests.RequestException as err:
            message = f"the info service did not answer: {_reason(err)}"
            report.findings.append(Finding(PROBLEM, "info_unreachable", message, _unreachable_fix(address, scheme_assumed)))
            return report, set()
        listed = _body(names)
        if names.status_code != 200 or not isinstance(listed, list):
            message = f"the info service refused to list datastacks ({_message(names)})"
            report.findings.append(Finding(PROBLEM, "info_error", message, _TELL_ADMINS))
            return report, set()
        with ThreadPoolExecutor(max_workers=8) as pool:
            report.datastacks = list(pool.map(lambda name: _check_datastack(http, address, name), sorted(listed)))
    finally:
        http.close()
    if not report.datastacks:
        message = f"the token sees no datastack on {address}"
        report.findings.append(Finding(WARNING, "no_datastacks", message, "ask the server's administrators for access to a dataset"))
    _datastack_findings(report, _mapping())
    return report, _check_local_files(report, token)


def diagnose(server: str | None = None, timeout: Timeout = DEFAULT_TIMEOUT) -> list[ServerReport]:
    """Reports of every configured server (or only ``server``). Servers known only from a
    token file that turns out to belong to a checked server's datastack (its local server)
    are not checked as servers of their own: their file is checked with that server."""
    candidates = _candidates(server)
    reports: list[ServerReport] = []
    local: set[str] = set()
    for candidate in sorted(candidates, key=lambda c: c.file_only):
        if candidate.file_only and server_netloc(candidate.address).lower() in local:
            continue
        report, local_servers = check_server(candidate.address, candidate.why, timeout, candidate.scheme_assumed)
        local |= local_servers
        reports.append(report)
    shared = [r.server for r in reports if r.token.source == "generic file"]
    if len(shared) > 1:
        for report in reports:
            if report.server in shared:
                report.findings.append(
                    Finding(
                        WARNING,
                        "generic_token_shared",
                        f"the generic token file's token is sent to {len(shared)} servers ({', '.join(shared)}); a token is meant for one",
                        "run `opencave setup-token SERVER` for each of them, so that each has a file of its own",
                    )
                )
    return reports


# --------------------------------------------------------------------------------------------
# Output


def _utc(text: str) -> dt.datetime:
    """A server's time (ISO 8601; without a zone it is UTC, as CAVE writes it)."""
    when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _versions_text(versions: list[VersionReport]) -> str:
    text = "versions " + ", ".join(str(v.version) for v in versions)
    expiring = [v for v in versions if v.expires_on is not None and v.days_left is not None]
    if not expiring:
        return text + " (none expires)"
    notes = []
    for v in expiring:
        when = _utc(v.expires_on).strftime("%Y-%m-%d %H:%M UTC")
        soon = "EXPIRED" if v.days_left <= 0 else f"in {v.days_left:.1f} days" + (", SOON" if v.days_left <= EXPIRY_WARNING_DAYS else "")
        notes.append(f"{v.version} expires {when} ({soon})")
    return text + " — " + "; ".join(notes)


def render_text(reports: list[ServerReport]) -> str:
    lines: list[str] = []
    for report in reports:
        lines.append(f"{report.server}")
        lines.append(f"  why checked: {'; '.join(report.why)}")
        token = report.token
        if token.prefix is not None:
            lines.append(f"  token:       {token.prefix}… ({token.length} characters) from the {token.source} {token.file}")
        elif token.file is not None:
            lines.append(f"  token:       none: the {token.source} {token.file} cannot be read")
        else:
            lines.append("  token:       none")
        if report.reachable is False:
            lines.append("  server:      unreachable")
        elif report.reachable:
            user = report.user
            who = "no token sent" if token.prefix is None else "the token is not accepted"
            if user:
                who = f"accepted: {user.get('name')} <{user.get('email')}>"
            lines.append(f"  server:      reachable; {who}")
        if report.user is not None:
            lines.append(f"  datastacks:  {len(report.datastacks)}")
            for ds in report.datastacks:
                if ds.versions is not None:
                    where = f" (materialize at {ds.local_server})" if ds.local_server and not same_server(ds.local_server, report.server) else ""
                    state = _versions_text(ds.versions) if ds.versions else "no versions"
                    lines.append(f"    {ds.name}: {state}{where}")
                else:
                    state = {"terms of service": "terms of service not accepted"}.get(ds.status, ds.status)
                    lines.append(f"    {ds.name}: {state}")
        for finding in sorted(report.findings, key=lambda f: _LEVELS.index(f.level)):
            lines.append(f"  {finding.level.upper()}: {finding.message}")
            if finding.fix:
                lines.append(f"    fix: {finding.fix}")
        lines.append("")
    problems = sum(f.level == PROBLEM for r in reports for f in r.findings)
    warnings = sum(f.level == WARNING for r in reports for f in r.findings)
    lines.append(f"{len(reports)} server(s) checked: {problems} problem(s), {warnings} warning(s)")
    home = os.path.expanduser("~").rstrip("/") + "/"
    return "\n".join(lines).replace(home, "~/")  # shorter lines; JSON keeps full paths


def render_json(reports: list[ServerReport]) -> str:
    problems = sum(f.level == PROBLEM for r in reports for f in r.findings)
    warnings = sum(f.level == WARNING for r in reports for f in r.findings)
    document = {"ok": problems == 0, "problems": problems, "warnings": warnings, "servers": [asdict(r) for r in reports]}
    return json.dumps(document, indent=2)


def _redact(text: str, reports: list[ServerReport]) -> str:
    """Last line of defence: no saved token appears in the output, even inside a server's
    message echoing it."""
    for report in reports:
        if report.token.source is None or report.token.file is None:
            continue
        try:
            token = load_token(report.token.file)
        except TokenFileError:
            continue
        if token and len(token) > 4:
            text = text.replace(token, token[:4] + "…")
    return text


def run_doctor(server: str | None, as_json: bool = False, timeout: Timeout = DEFAULT_TIMEOUT) -> int:
    """Print the reports (text, or one JSON document); 0 when no problem was found, else 1."""
    reports = diagnose(server, timeout)
    text = render_json(reports) if as_json else render_text(reports)
    print(_redact(text, reports))
    return 1 if any(f.level == PROBLEM for r in reports for f in r.findings) else 0
