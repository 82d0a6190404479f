"""Which service or process a command talks to.

Precedence: ``--name`` (the registered service of that name), ``--url`` (a service's API),
then ``--pid`` (a registered service, else the process seen from outside), then the one
service registered in the runtime directory,
then, with none registered, the machine. Several registered services and no choice is
an error that lists them; so is a PID or URL that is gone. Both exit with status 2.
"""

from __future__ import annotations

from .._record import record
from ..runtime import ServiceEntry, list_services

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from ._client import ApiClient

__all__ = ["Target", "TargetError", "describe_services", "resolve_target"]


class TargetError(Exception):
    """The target is ambiguous, gone, or cannot do what was asked (exit status 2)."""


@record
class Target:
    """A resolved target (a record, not a dataclass or a NamedTuple: no ``dataclasses``
    import, no compiled annotations at every command's start).

    Attributes:
        kind: ``"service"`` (a memdiag API answers), ``"process"`` (a PID without an
            agent, seen from outside) or ``"machine"`` (nothing chosen, none registered).
        pid: the process, when known.
        client: the API client of a service.
        entry: the runtime entry of a registered service.
    """

    kind: str
    pid: int | None = None
    client: ApiClient | None = None
    entry: ServiceEntry | None = None

    @property
    def label(self) -> str:
        if self.kind == "machine":
            return "this machine"
        if self.kind == "process":
            return f"PID {self.pid} (no memdiag agent)"
        name = f" ({self.entry.name})" if self.entry is not None and self.entry.name else ""
        who = f"PID {self.pid}{name}" if self.pid else (self.client.url if self.client else "?")
        return f"service {who}"


def describe_services(entries: list[ServiceEntry]) -> str:
    """``"1234 (app) at http://127.0.0.1:8000, 5678 (worker 1 of 5670) ..."`` for error messages."""
    parts = []
    for e in entries:
        name = f" ({e.name})" if e.name else ""
        role = ""
        if e.server:
            master = e.server.get("role") == "master"
            role = " (master)" if master else f" (worker {e.server.get('slot')} of {e.server.get('pid')})"
        where = f" at {e.url}" if e.url else ""
        parts.append(f"{e.pid}{name}{role}{where}")
    return ", ".join(parts)


def _client(url: str, token: str | None = None, timeout: float = 5.0) -> ApiClient:
    """An API client (the HTTP client is imported only once there is a service to talk to).

    Raises:
        TargetError: ``url`` is not an http(s) URL.
    """
    from ._client import ApiClient, ApiError

    try:
        return ApiClient(url, token, timeout)
    except ApiError as exc:
        raise TargetError(str(exc)) from None


def client_for(entry: ServiceEntry, token: str | None = None, timeout: float = 5.0) -> ApiClient:
    """The client for a registered service: its control channel when it has one (no
    token needed), else its HTTP API with ``token`` or the one in its token file. An
    explicit ``token`` for a service with an API means that API: it is what is tested."""
    if entry.socket and not (token and entry.url):
        return _client(f"unix:{entry.socket}", None, timeout)
    return _client(entry.url or "", token or entry.token(), timeout)


def _by_name(entries: list[ServiceEntry], name: str, pid: int | None, token: str | None, timeout: float) -> Target:
    """``--name NAME`` (with ``--pid N``, the one of that name with that PID)."""
    named = [e for e in entries if e.name == name]
    if pid is not None:
        named = [e for e in named if e.pid == pid]
    if len(named) != 1:
        found = f"{len(named)} are: {describe_services(named)}" if named else "none is"
        raise TargetError(
            f"--name {name}: {found} running with that name; "
            + ("choose one with --pid N" if named else f"running services: {describe_services(entries) or 'none'}")
        )
    return Target("service", named[0].pid, client_for(named[0], token, timeout), named[0])


def _by_url(entries: list[ServiceEntry], url: str, pid: int | None, token: str | None, timeout: float) -> Target:
    """``--url URL``: that API, with the token of the registered service behind it if any."""
    client = _client(url, token, timeout)
    entry = next((e for e in entries if e.url and _client(e.url).url == client.url), None)
    if entry is not None and client.token is None:
        client.token = entry.token()
    if pid is not None and entry is not None and entry.pid != pid:
        raise TargetError(f"--url {url} belongs to PID {entry.pid}, not --pid {pid}")
    return Target("service", entry.pid if entry else pid, client, entry)


def _pid_alive(pid: int) -> bool:
    from ..probes.process import read_stat

    return read_stat(pid) is not None


def resolve_target(
    *,
    pid: int | None = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 5.0,
    require_service: str | None = None,
    name: str | None = None,
) -> Target:
    """Resolve the command's target.

    Args:
        pid: ``--pid``.
        url: ``--url``.
        name: ``--name``: the one registered service of that name.
        token: ``--token``; else the registered service's token file.
        timeout: seconds for each API request.
        require_service: when set, a target without an agent is an error and this names
            what needs one (``"cleanup"``).

    Raises:
        TargetError: ambiguous, gone, or (with ``require_service``) no agent.
    """
    if pid is not None and pid <= 0:
        raise TargetError(f"--pid must be a positive process id, got {pid}")
    entries = [e for e in list_services() if e.reachable]
    if name is not None:
        return _by_name(entries, name, pid, token, timeout)
    if url is not None:
        return _by_url(entries, url, pid, token, timeout)
    if pid is not None:
        entry = next((e for e in entries if e.pid == pid), None)
        if entry is not None:
            return Target("service", pid, client_for(entry, token, timeout), entry)
        if not _pid_alive(pid):
            others = f"; running services: {describe_services(entries)}" if entries else ""
            raise TargetError(f"no process {pid} (it is gone or never existed){others}")
        if require_service:
            raise TargetError(
                f"PID {pid} runs no memdiag agent with an API; {require_service} needs one "
                "(start it with memdiag.start(http=True), or launch it with `memdiag run`)"
            )
        return Target("process", pid)
    if len(entries) > 1:
        raise TargetError(
            f"{len(entries)} memdiag services are running: {describe_services(entries)}; "
            "choose one with --pid N or --url URL"
        )
    if entries:
        e = entries[0]
        return Target("service", e.pid, client_for(e, token, timeout), e)
    if require_service:
        raise TargetError(
            f"no running memdiag service found; {require_service} needs one "
            "(start it with memdiag.start(http=True) or `memdiag run`), or pass --url URL"
        )
    return Target("machine")
