"""The framework-neutral HTTP API: one handler, request in, response out, no I/O.

:class:`MemoryAPI` answers every endpoint of the memory API; the FastAPI, Flask and
aiohttp adapters and the standalone server only move bytes between their framework and
:meth:`MemoryAPI.handle`, so every integration answers alike::

    api = MemoryAPI()                     # the shared MemoryDiagnostics, token from config
    r = api.handle("GET", "/api/memory/status", {}, {"Authorization": f"Bearer {api.token}"}, b"")
    r.status, r.headers, r.body           # 200, [("Content-Type", "application/json"), ...], b'{...}'

Checks run in this order: unknown path 404, wrong method 405, body over ``max_body``
413, missing or wrong bearer token 401 (every endpoint but health, metrics and the
dashboard page), ``?pid=N`` forwarded to process N of a pre-fork server (a bad value
422, not a process of the server 404, no answer 502; the target then runs every check
that follows), per-client rate limit on acting endpoints 429, malformed JSON 400,
non-JSON body 415, invalid fields or values 422. Responses never carry environment
values, the token, or object contents; command lines are redacted by the core.
"""

from __future__ import annotations

import hmac
import importlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import registry, runtime
from .._logging import get_logger
from .._record import record
from ..config import FIELD_INFO
from ..errors import ConfigError, MemdiagError
from ..history import COLUMNS
from .ratelimit import TokenBucket
from .routes import (
    API_PREFIX,
    DEFAULT_MAX_BODY,
    HEALTH_TYPE,
    JSON_TYPE,
    PATHS,
    PID_PARAM,
    READ_ONLY_FIELDS,
    REQUEST_SCHEMAS,
    ROUTES,
    Endpoint,
    allow,
    problems,
)
from .tick import PerTick

if TYPE_CHECKING:
    from ..health import HealthMonitor
    from ..service import MemoryDiagnostics

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_BODY",
    "PATHS",
    "READ_ONLY_FIELDS",
    "MemoryAPI",
    "Response",
]

log = get_logger("memdiag.http")

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DASHBOARD_CSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'"

_MAX_HISTORY_ROWS = 1_000_000


class HeadersLike(Protocol):
    """Request headers as any framework holds them: something with ``items()``."""

    def items(self) -> Iterable[tuple[str, str]]: ...


@record
class Response:
    """What :meth:`MemoryAPI.handle` returns: status, headers (in order) and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or ``None``."""
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    @property
    def content_type(self) -> str | None:
        return self.header("Content-Type")


class _Problem(Exception):
    """An error answer, raised anywhere in a handler and turned into a response."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: Any = None,
        *,
        fields: Mapping[str, str] | None = None,
        headers: Sequence[tuple[str, str]] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error}
        if fields is not None:
            self.body["fields"] = dict(fields)
        else:
            self.body["detail"] = detail
        if extra:
            self.body.update(extra)
        self.headers = list(headers)


@record
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    client: str


def _request(
    method: str, path: str, query: Mapping[str, Any], headers: HeadersLike, body: bytes, client: str | None
) -> _Request:
    return _Request(
        method.upper(),
        path,
        {str(k): (v[-1] if isinstance(v, (list, tuple)) and v else str(v)) for k, v in query.items()},
        {str(k).lower(): str(v) for k, v in headers.items()},
        bytes(body or b""),
        client or "-",
    )


def _finite(obj: Any) -> Any:
    """A copy of ``obj`` with NaN and infinities replaced by ``None`` (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _default(obj: Any) -> Any:
    # Sets, paths and tuples-as-keys are data; anything else is shown by its type only,
    # never by its repr, so no object contents reach a response.
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    return f"<{type(obj).__name__}>"


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes; NaN and infinities become ``null``."""
    try:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_default)
    except ValueError:  # a NaN somewhere: the rare slow path
        text = json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False, default=_default)
    return text.encode("ascii")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _server_token() -> str | None:
    """The token shared by every process of a pre-fork server (``None`` outside one)."""
    try:
        from ..workers import shared_token

        return shared_token()
    except Exception as exc:  # a private file we cannot use: this process's own token
        log.warning("memdiag: no shared API token for this server (%s); using this process's own", exc)
        return None


class MemoryAPI:
    """The memory API as one callable: ``handle(method, path, query, headers, body)``.

    Args:
        diag: the monitor to serve; ``None`` means the shared
            :meth:`MemoryDiagnostics.get_instance`, resolved on every request.
        token: the bearer token; ``None`` takes ``api_token`` from the configuration,
            else one is generated for this API object (read it from :attr:`token`).
        health: the :class:`~memdiag.HealthMonitor` behind ``/api/memory/health``, so
            checks the application added are served; default: one over ``diag``.
        max_body: largest request body accepted (bytes); larger gets 413.
        rate_limit: ``(requests_per_second, burst)`` per client on the acting endpoints
            (cleanup, configure, trace); ``None`` turns it off.
    """

    def __init__(
        self,
        diag: MemoryDiagnostics | None = None,
        token: str | None = None,
        *,
        health: HealthMonitor | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        rate_limit: tuple[float, int] | None = (5.0, 20),
    ) -> None:
        if token is not None and len(token) < 16:
            raise ValueError("the API token must be at least 16 characters")
        self._diag = diag
        self._token = token
        self._generated: str | None = None
        self._health_monitor = health
        self.max_body = int(max_body)
        self._bucket = TokenBucket(*rate_limit) if rate_limit else None
        self._openapi_body: bytes | None = None
        self._openapi_answer: Response | None = None
        self._tick = PerTick()

    # -- identity ----------------------------------------------------------------------
    @property
    def diagnostics(self) -> MemoryDiagnostics:
        """The monitor this API serves (the shared one when built with ``diag=None``)."""
        if self._diag is not None:
            return self._diag
        from ..service import MemoryDiagnostics

        return MemoryDiagnostics.get_instance()

    @property
    def token_configured(self) -> bool:
        """True when the token was given or configured (not generated)."""
        return bool(self._token or self.diagnostics.config.api_token)

    @property
    def token(self) -> str:
        """The bearer token every non-public endpoint requires."""
        configured = self._token or self.diagnostics.config.api_token
        if configured:
            return configured
        if self._generated is None:
            self._generated = _server_token() or secrets.token_urlsafe(32)
        return self._generated

    def announce(self, url: str, *, name: str = "", started_at: float = 0.0) -> Path:
        """Tell the CLI where this API is served: writes the runtime entry and the 0600 token.

        The standalone server does this itself; call it after mounting an adapter if you
        want ``memdiag`` commands to find the service (``url`` is its base URL).
        """
        return runtime.register_service(url.rstrip("/"), self.token, name=name, started_at=started_at)

    # -- the handler -------------------------------------------------------------------
    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any],
        headers: HeadersLike,
        body: bytes,
        *,
        client: str | None = None,
    ) -> Response:
        """Answer one request; never raises.

        Args:
            method: the HTTP method.
            path: the path relative to where the API is mounted, e.g. ``/api/memory/status``.
            query: query parameters; a value may be a string or a list of strings (the
                last one counts).
            headers: request headers, any case (a mapping, or anything with ``items()``).
            body: the request body (adapters pass at most ``max_body + 1`` bytes).
            client: the peer's address, for the per-client rate limit.
        """
        try:
            return self._dispatch(_request(method, path, query, headers, body, client))
        except _Problem as p:
            return self._json(p.status, p.body, p.headers)
        except Exception:  # a bug or a failing report: 500, details in the log only
            log.exception("memdiag API: %s %s failed", method, path)
            return self._json(500, {"error": "internal error", "detail": "see the service log"})

    def try_handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any],
        headers: HeadersLike,
        body: bytes,
        *,
        client: str | None = None,
    ) -> Response | None:
        """The answer, if it is ready without building a report; else ``None``.

        Routing, authentication and size errors, ``OPTIONS``, and reads served from a
        cache (the profile of the current sample, the OpenAPI document) are answered
        here in microseconds, so a server may call this on its I/O thread (an event
        loop) and send everything else to :meth:`handle` on a worker thread. It never
        raises, never blocks, and never changes state: acting endpoints always return
        ``None`` (their rate limit is counted once, in :meth:`handle`).
        """
        try:
            req = _request(method, path, query, headers, body, client)
        except Exception:  # let handle() answer (and log) it the slow way
            return None
        return self._ready(req)

    def try_handle_parsed(
        self, method: str, path: str, headers: Mapping[str, str], *, client: str | None = None
    ) -> Response | None:
        """:meth:`try_handle` of a request already in the form the core uses: ``method`` in
        upper case, ``headers`` with lower-case names (repeated ones joined by ", "), no
        query, no body. The standalone server's fast path reads requests into this form;
        the same answers, without normalizing the request again."""
        return self._ready(_Request(method, path, {}, headers, b"", client or "-"))  # type: ignore[arg-type]

    def _ready(self, req: _Request) -> Response | None:
        try:
            endpoint = self._route(req)
            if isinstance(endpoint, Response):
                return endpoint
            if endpoint.acting or endpoint.quick is None or "pid" in req.query:
                return None
            resp: Response | None = getattr(self, endpoint.quick)(req)
            if resp is not None and req.method == "HEAD":
                return Response(resp.status, resp.headers, b"")
            return resp
        except _Problem as p:
            return self._json(p.status, p.body, p.headers)
        except Exception:  # let handle() answer (and log) it the slow way
            return None

    def precheck(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any],
        headers: HeadersLike,
        *,
        client: str | None = None,
    ) -> Response | None:
        """The answer to a request decided by its head alone, or ``None`` to read its body.

        Unknown path 404, wrong method 405, a declared ``Content-Length`` over
        ``max_body`` 413, a missing or wrong token 401, and ``OPTIONS``: a server calls
        this before reading a body, so it never reads (or sends ``100 Continue`` for) a
        body that an unauthenticated or oversized request carries. Never raises or blocks.
        """
        try:
            endpoint = self._route(_request(method, path, query, headers, b"", client))
        except _Problem as p:
            return self._json(p.status, p.body, p.headers)
        except Exception:  # let handle() answer (and log) it once the body is in
            return None
        return endpoint if isinstance(endpoint, Response) else None

    def _route(self, req: _Request) -> Endpoint | Response:
        """The endpoint for ``req`` once it passed the checks every endpoint shares.

        Returns a response instead for ``OPTIONS``; raises :class:`_Problem` for 404,
        405, 413 and 401.
        """
        methods = ROUTES.get(req.path)
        if methods is None:
            raise _Problem(404, "not found", f"no endpoint at {req.path[:200]}")
        allowed = allow(req.path)
        if req.method == "OPTIONS":
            return Response(204, [("Allow", allowed), ("Cache-Control", "no-store")], b"")
        endpoint = methods.get("GET" if req.method == "HEAD" else req.method)
        if endpoint is None:
            detail = f"{req.method} is not allowed here; use {allowed}"
            raise _Problem(405, "method not allowed", detail, headers=[("Allow", allowed)])
        declared = req.headers.get("content-length", "0").strip()
        too_big = len(req.body) > self.max_body or (declared.isdigit() and int(declared) > self.max_body)
        if too_big:
            raise _Problem(413, "request body too large", f"the limit is {self.max_body} bytes")
        if endpoint.auth:
            self._authenticate(req)
        return endpoint

    def _dispatch(self, req: _Request) -> Response:
        endpoint = self._route(req)
        if isinstance(endpoint, Response):
            return endpoint
        if endpoint.forwards and "pid" in req.query:
            forwarded = self._forward(req)
            if forwarded is not None:  # the target's own limiter decided (its control channel)
                return forwarded
        if endpoint.acting and self._bucket is not None:
            wait = self._bucket.take(req.client)
            if wait > 0:
                raise _Problem(
                    429,
                    "too many requests",
                    "per-client rate limit on acting endpoints",
                    headers=[("Retry-After", str(max(1, math.ceil(wait))))],
                    extra={"retry_after_seconds": round(max(wait, 0.001), 3)},
                )
        resp: Response = getattr(self, endpoint.handler)(req)
        if req.method == "HEAD":
            return Response(resp.status, resp.headers, b"")
        return resp

    def _forward(self, req: _Request) -> Response | None:
        """``?pid=N``: the answer of process N of this pre-fork server (``None``: it is us).

        Forwarded before this process's rate limit is counted: an acting request is
        limited by its target (the API on N's control channel, per original client), so
        requests to different workers never share one bucket.
        """
        try:
            pid = PID_PARAM.value(req.query["pid"])
        except ValueError as exc:
            raise _Problem(422, "invalid request", fields={"pid": f"{exc} (a process id)"}) from None
        if pid == os.getpid():
            return None
        fleet = importlib.import_module("memdiag.control.fleet")
        try:
            status, headers, body = fleet.forward(pid, req.method, req.path, req.query, req.body, client=req.client)
        except fleet.NotAMember:
            raise _Problem(404, "not found", f"process {pid} is not a memdiag process of this server") from None
        except OSError as exc:
            raise _Problem(502, "bad gateway", f"process {pid} did not answer: {exc}"[:300]) from None
        return Response(status, headers, b"" if req.method == "HEAD" else body)

    def _authenticate(self, req: _Request) -> None:
        scheme, _, credential = req.headers.get("authorization", "").strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _Problem(
                401,
                "unauthorized",
                "send Authorization: Bearer <token>",
                headers=[("WWW-Authenticate", 'Bearer realm="memdiag"')],
            )
        # Constant time in the token's content; encode so non-ASCII input compares too.
        if not hmac.compare_digest(credential.encode("utf-8", "replace"), self.token.encode("utf-8")):
            raise _Problem(
                401,
                "unauthorized",
                "invalid token",
                headers=[("WWW-Authenticate", 'Bearer realm="memdiag", error="invalid_token"')],
            )

    # -- response helpers --------------------------------------------------------------
    def _json(
        self, status: int, data: Any, headers: Sequence[tuple[str, str]] = (), content_type: str = JSON_TYPE
    ) -> Response:
        body = dumps(data)
        token = self.token.encode()
        if token in body:  # belt and braces: the token is never echoed
            body = body.replace(token, b"***")
        return Response(
            status,
            [
                ("Content-Type", content_type),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
                *headers,
            ],
            body,
        )

    @staticmethod
    def _body_object(req: _Request, schema: str) -> dict[str, Any]:
        """The JSON object in the body (empty body: ``{}``), checked against the request
        schema ``schema`` of :mod:`memdiag.http.routes`; 415/400/422 otherwise."""
        if not req.body.strip():
            return {}
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != JSON_TYPE and not ctype.endswith("+json"):
            raise _Problem(415, "unsupported media type", "send Content-Type: application/json")
        try:
            data = json.loads(req.body, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise _Problem(400, "malformed JSON", str(exc)[:200]) from None
        if not isinstance(data, dict):
            raise _Problem(422, "invalid request", fields={"body": "must be a JSON object"})
        if schema != "ConfigureRequest":  # configure reports its problems with the config's
            found = problems(REQUEST_SCHEMAS[schema], data)
            if found:
                raise _Problem(422, "invalid request", fields=found)
        return data

    # -- endpoints ---------------------------------------------------------------------
    def _status(self, req: _Request) -> Response:
        diag = self.diagnostics
        return self._tick.build("status", diag, lambda: self._json(200, diag.status()))

    def _profile(self, req: _Request) -> Response:
        diag = self.diagnostics
        return self._tick.build("profile", diag, lambda: self._json(200, diag.profile()))

    def _cached(self, req: _Request) -> Response | None:
        """The status or profile encoded for the current sample, if built (see :mod:`.tick`)."""
        return self._tick.get(req.path.rsplit("/", 1)[1], self.diagnostics)  # type: ignore[no-any-return]

    def _diagnostics(self, req: _Request) -> Response:
        return self._json(200, self.diagnostics.diagnostics())

    def _cleanup(self, req: _Request) -> Response:
        data = self._body_object(req, "CleanupRequest")
        force = data.get("force", False)
        dry_run = data.get("dry_run")
        result = self.diagnostics.cleanup(force=force, dry_run=dry_run)
        if result.get("performed"):
            return self._json(200, result)
        reason = result.get("skipped_reason") or "busy"
        wait = float(result.get("retry_after_seconds") or 1.0)
        detail = {
            "in_progress": "another cleanup is running",
            "cooldown": "inside the cleanup cooldown; retry later or send force=true",
        }.get(reason, reason)
        raise _Problem(
            429,
            f"cleanup {reason.replace('_', ' ')}",
            detail,
            headers=[("Retry-After", str(max(1, math.ceil(wait))))],
            extra={"retry_after_seconds": round(wait, 3), "result": result},
        )

    def _cache_metrics(self, req: _Request) -> Response:
        items: list[dict[str, Any]] = []
        for cache in registry.caches():
            name = str(getattr(cache, "name", type(cache).__name__))
            try:
                items.append({**dict(cache.metrics()), "name": name})
            except Exception as exc:  # one broken cache must not hide the others
                items.append({"name": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
        total: dict[str, Any] = {"caches": len(items)}
        for key in ("entries", "bytes", "max_bytes", "hits", "misses", "evictions"):
            values = [
                c[key] for c in items if isinstance(c.get(key), (int, float)) and not isinstance(c.get(key), bool)
            ]
            total[key] = sum(values) if values else None
        lookups = (total["hits"] or 0) + (total["misses"] or 0)
        total["hit_ratio"] = round(total["hits"] / lookups, 6) if lookups and total["hits"] is not None else None
        total["fill_ratio"] = (
            round(total["bytes"] / total["max_bytes"], 6) if total["bytes"] is not None and total["max_bytes"] else None
        )
        return self._json(
            200,
            {
                "caches": items,
                "total": total,
                "pressure_threshold": self.diagnostics.config.cache_pressure_threshold,
            },
        )

    def _get_config(self, req: _Request) -> Response:
        cfg = self.diagnostics.config
        fields = {
            name: {
                "type": info.type.__name__,
                "nullable": info.nullable,
                "default": "***" if name == "api_token" and info.default else info.default,
                "help": info.help,
                "min": info.bounds[0] if info.type in (int, float) else None,
                "max": info.bounds[1] if info.type in (int, float) else None,
                "choices": list(info.choices) if info.choices else None,
                "read_only": name in READ_ONLY_FIELDS,
            }
            for name, info in FIELD_INFO.items()
        }
        return self._json(200, {"config": cfg.to_dict(), "fields": fields})

    def _configure(self, req: _Request) -> Response:
        data = self._body_object(req, "ConfigureRequest")
        errors = {
            name: "read-only over HTTP; set it in the config file or environment"
            for name in data
            if name in READ_ONLY_FIELDS
        }
        errors.update(
            (name, why)
            for name, why in problems(REQUEST_SCHEMAS["ConfigureRequest"], data).items()
            if name not in errors
        )
        persist = data.pop("persist", False)
        diag = self.diagnostics
        before = diag.config
        if errors:  # report the values' problems too, not only the first kind found
            valid = {k: v for k, v in data.items() if k not in errors and k in FIELD_INFO}
            try:
                before.updated(valid)
            except ConfigError as exc:
                errors.update(exc.errors)
            raise _Problem(422, "invalid configuration", fields=errors)
        try:
            new = diag.configure(data, persist=persist)
        except ConfigError as exc:
            raise _Problem(422, "invalid configuration", fields=exc.errors) from None
        except OSError as exc:  # persisting failed; nothing was changed
            raise _Problem(
                500, "could not save the configuration", f"{type(exc).__name__}: {exc.strerror or exc}"
            ) from None
        body: dict[str, Any] = {"config": new.to_dict(), "changed": sorted(before.diff(new)), "persisted": persist}
        if persist:
            from ..config import default_config_path

            body["path"] = str(default_config_path())
        return self._json(200, body)

    def _history(self, req: _Request) -> Response:
        args = self._params(req)
        if args.get("source") == "store":
            return self._stored_history(args)
        last = args.get("last")
        last = min(last, _MAX_HISTORY_ROWS) if last is not None else None
        since = args.get("since")
        columns: list[str] | None = args.get("columns") or None
        diag = self.diagnostics
        rows = diag.history_rows(last=last, since=since, columns=columns)
        names = list(dict.fromkeys(["time", *(columns or COLUMNS)]))
        return self._json(
            200,
            {"columns": names, "rows": [[row.get(n) for n in names] for row in rows], "trends": diag.trends()},
        )

    def _stored_history(self, args: dict[str, Any]) -> Response:
        """Rows of the history file (means per row; ``level`` its worst) in the ring's shape."""
        diag = self.diagnostics
        store = diag.store
        names = list(dict.fromkeys(["time", *(args.get("columns") or COLUMNS)]))
        rows: list[list[Any]] = []
        if store is not None:
            wanted = [c for c in names if c != "time"]
            found = store.query(
                since=args.get("since"), columns=wanted, limit=_MAX_HISTORY_ROWS, max_points=args.get("points") or 500
            )
            last = args.get("last")
            if last is not None:
                found = found[-last:] if last < len(found) else found
            for r in found:
                rows.append([r["time"], *(r[f"{c}_max" if c == "level" else f"{c}_mean"] for c in wanted)])
        body = {
            "columns": names,
            "rows": rows,
            "source": "store",
            "store": store.path if store is not None else None,
            "store_mode": store.mode if store is not None else "off",
            "trends": diag.trends(),
        }
        return self._json(200, body)

    @staticmethod
    def _params(req: _Request) -> dict[str, Any]:
        """The route's query parameters, parsed and checked by their schemas; 422 otherwise."""
        endpoint = ROUTES[req.path][req.method if req.method != "HEAD" else "GET"]
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for param in endpoint.params:
            text = req.query.get(param.name)
            if text is None or (not text.strip() and not param.explode):
                continue
            try:
                values[param.name] = param.value(text)
            except ValueError as exc:
                errors[param.name] = str(exc)[:300]
        if errors:
            raise _Problem(422, "invalid request", fields=errors)
        return values

    def _optional(self, module: str, attr: str, feature: str) -> Callable[..., Any]:
        """``module.attr``, imported on first use; 501 while that part is not installed."""
        try:
            fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
            return fn
        except (ImportError, AttributeError) as exc:
            raise _Problem(
                501, "not implemented", f"{feature} is not available: {type(exc).__name__}: {exc}"[:300]
            ) from None

    def _leaks(self, req: _Request) -> Response:
        report = self._optional("memdiag.leaks", "leaks_report", "leak detection")
        return self._json(200, report(self.diagnostics))

    def _heap(self, req: _Request) -> Response:
        report = self._optional("memdiag.leaks", "heap_report", "the live-heap profile")
        try:
            return self._json(200, report(self.diagnostics))
        except MemdiagError as exc:  # not running here: heap_profile off, or no sampler
            raise _Problem(409, "conflict", str(exc)[:300]) from None

    def _trace(self, req: _Request) -> Response:
        data = self._body_object(req, "TraceRequest")
        seconds = data.get("seconds")
        start = self._optional("memdiag.leaks", "start_tracing", "allocation tracing")
        try:
            result = start(self.diagnostics, seconds=seconds)
        except MemdiagError as exc:  # e.g. a window is already open, or the budget is spent
            raise _Problem(409, "conflict", str(exc)[:300]) from None
        except ValueError as exc:
            raise _Problem(422, "invalid request", fields={"seconds": str(exc)[:300]}) from None
        return self._json(200, result)

    def _server(self, req: _Request) -> Response:
        report = self._optional("memdiag.control.fleet", "server_report", "the server view")
        return self._json(200, report(self.diagnostics))

    def _health(self, req: _Request) -> Response:
        monitor = self._health_monitor
        if monitor is None:
            from ..health import HealthMonitor

            monitor = HealthMonitor(self.diagnostics)

        def make() -> Response:
            body = monitor.get_enhanced_health_with_memory()
            return self._json(503 if body.get("status") == "fail" else 200, body, content_type=HEALTH_TYPE)

        if monitor.has_checks():
            return make()  # the application's checks run for every request
        return self._tick.build("health", self.diagnostics, make)

    def _health_if_built(self, req: _Request) -> Response | None:
        """Health built for the current sample (see :mod:`.tick`), unless the application
        added checks of its own: those run for every request, on a worker thread."""
        monitor = self._health_monitor
        if monitor is not None and monitor.has_checks():
            return None
        return self._tick.get("health", self.diagnostics)  # type: ignore[no-any-return]

    def _metrics(self, req: _Request) -> Response:
        from .metrics import render

        text = render(self.diagnostics)
        return Response(200, [("Content-Type", METRICS_TYPE), ("Cache-Control", "no-store")], text.encode("utf-8"))

    def _openapi(self, req: _Request) -> Response:
        if self._openapi_answer is None:
            from .openapi import openapi_spec

            body = dumps(openapi_spec())
            # One answer object for every request, so a server encodes it once per second.
            self._openapi_answer = Response(200, [("Content-Type", JSON_TYPE), ("Cache-Control", "no-store")], body)
            self._openapi_body = body
        return self._openapi_answer

    def _openapi_if_built(self, req: _Request) -> Response | None:
        return self._openapi(req) if self._openapi_body is not None else None

    def _dashboard(self, req: _Request) -> Response:
        page_html = self._optional("memdiag.dashboard", "page_html", "the dashboard")
        html = page_html()
        body = html.encode("utf-8") if isinstance(html, str) else bytes(html)
        return Response(
            200,
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Security-Policy", DASHBOARD_CSP),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", "no-store"),
                ("Referrer-Policy", "no-referrer"),
            ],
            body,
        )
