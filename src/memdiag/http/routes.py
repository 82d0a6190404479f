"""The API's route table and its request schemas: what serves requests and what documents them.

Every endpoint is one :class:`Endpoint` in :data:`ROUTES`: the handler that answers it and
what checks it gets (token, rate limit), its query parameters and request body as JSON
Schemas, and its summary. :class:`~memdiag.http.core.MemoryAPI` routes by this table and
validates query parameters and bodies with :func:`problems` against these schemas;
:mod:`memdiag.http.openapi` writes the OpenAPI document from the same table and schemas.
So the document cannot promise what the server refuses, or the reverse
(``tests/test_http_openapi.py`` walks every route to prove it).

Config fields' schemas come from :data:`memdiag.config.FIELD_INFO` and its
:attr:`~memdiag.config.FieldInfo.bounds` (minima and maxima, the magnitude limit included),
which the configuration's own validator uses too.

This module imports neither the handler nor the document builder: both import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .._record import record, replace
from ..config import FIELD_INFO
from ..history import COLUMNS

__all__ = [
    "API_PREFIX",
    "DEFAULT_MAX_BODY",
    "PATHS",
    "PID_PARAM",
    "READ_ONLY_FIELDS",
    "REQUEST_SCHEMAS",
    "ROUTES",
    "Endpoint",
    "Param",
    "allow",
    "field_schema",
    "problems",
    "statuses",
]

Schema = dict[str, Any]

API_PREFIX = "/api/memory"
DEFAULT_MAX_BODY = 64 * 1024
JSON_TYPE = "application/json"
HEALTH_TYPE = "application/health+json"

# Fields that name files, URLs or the credential itself: an API client may read them
# (secrets redacted) but changing them needs the config file or the environment, so a
# stolen token cannot point the service at new files or hosts, or lock its owner out.
READ_ONLY_FIELDS = frozenset(
    {
        "api_token",
        "http_host",
        "http_port",
        "history_db",
        "history_persist",
        "service_name",
        "flight_recorder_path",
        "leak_webhook_url",
    }
)

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def field_schema(name: str, *, request: bool) -> Schema:
    """The JSON Schema of config field ``name``: as sent (``request``, with its bounds) or as read."""
    info = FIELD_INFO[name]
    base: Schema = {"type": _JSON_TYPES[info.type]}
    if request and info.type in (int, float):
        base["minimum"], base["maximum"] = info.bounds
    if info.choices:
        base["enum"] = list(info.choices)
    schema: Schema = base
    if info.nullable:
        schema = {"type": [base["type"], "null"]} if len(base) == 1 else {"anyOf": [base, {"type": "null"}]}
    schema["description"] = info.help + (" (read-only over HTTP)" if name in READ_ONLY_FIELDS else "")
    return schema


def _configure_request() -> Schema:
    writable = [n for n in FIELD_INFO if n not in READ_ONLY_FIELDS]
    return {
        "type": "object",
        "description": "A partial update: any writable config fields, validated as a whole, "
        "relations too (profile_interval >= sample_interval; history_size within "
        "self_memory_budget_mb); `persist` also writes them to the config file.",
        "properties": {
            "persist": {"type": "boolean", "default": False},
            **{n: field_schema(n, request=True) for n in writable},
        },
        "additionalProperties": False,
    }


#: Request bodies by component name (``#/components/schemas/<name>`` in the document).
REQUEST_SCHEMAS: dict[str, Schema] = {
    "CleanupRequest": {
        "type": "object",
        "properties": {
            "force": {"type": "boolean", "default": False, "description": "ignore the cooldown; run emergency rungs"},
            "dry_run": {"type": ["boolean", "null"], "description": "report only (null: the config's cleanup_dry_run)"},
        },
        "additionalProperties": False,
    },
    "ConfigureRequest": _configure_request(),
    "TraceRequest": {
        "type": "object",
        "properties": {
            "seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": FIELD_INFO["trace_window_seconds"].bounds[1],
                "description": "window length (default: trace_window_seconds)",
            }
        },
        "additionalProperties": False,
    },
}


# -- validation: the subset of JSON Schema these schemas use ------------------------------


_A = {
    "boolean": "a boolean",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "a list",
    "object": "an object",
}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    return kind == "object" and isinstance(value, dict)


def problem(schema: Schema, value: Any) -> str | None:
    """Why ``value`` does not fit ``schema``, or ``None`` (type, enum, bounds, items, anyOf)."""
    if "anyOf" in schema:
        found = [problem(s, value) for s in schema["anyOf"]]
        return None if None in found else next(p for p in found if p)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_type_ok(k, value) for k in kinds):
            return "must be " + " or ".join(_A.get(k, k) for k in kinds)
    if value is None:
        return None
    if "enum" in schema and value not in schema["enum"]:
        return f"must be one of {', '.join(map(str, schema['enum']))}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if "minimum" in schema and value < schema["minimum"]:
            return f"must be >= {schema['minimum']:g}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"must be <= {schema['maximum']:g}"
        if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
            return f"must be > {schema['exclusiveMinimum']:g}"
    if isinstance(value, list) and "items" in schema:
        bad = [str(v)[:40] for v in value if problem(schema["items"], v)]
        if bad:
            return f"invalid item(s): {', '.join(bad)[:200]}"
    return None


def problems(schema: Schema, data: Mapping[str, Any]) -> dict[str, str]:
    """``{field: why}`` for an object ``data`` against an object ``schema`` (empty: it fits)."""
    props: Mapping[str, Schema] = schema.get("properties", {})
    out: dict[str, str] = {}
    for name, value in data.items():
        if name not in props:
            if schema.get("additionalProperties", True) is False:
                out[name] = "unknown field"
            continue
        why = problem(props[name], value)
        if why:
            out[name] = why
    return out


# -- query parameters ---------------------------------------------------------------------


@record
class Param:
    """A query parameter: its schema, and how its text becomes the value the schema checks."""

    name: str
    schema: Schema
    description: str
    parse: Callable[[str], Any]
    explode: bool = True  # False: an array as one comma-separated value

    def value(self, text: str) -> Any:
        """The parsed and checked value; ``ValueError`` saying why not."""
        try:
            value = self.parse(text.strip())
        except (ValueError, OverflowError):
            value = text
        why = problem(self.schema, value)
        if why:
            raise ValueError(why)
        return value

    def openapi(self) -> Schema:
        out: Schema = {"name": self.name, "in": "query", "schema": self.schema, "description": self.description}
        if not self.explode:
            out.update(style="form", explode=False)
        return out


def _integer(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text[:19]) if len(text) > 19 else int(text)  # longer: beyond any cap anyway


def _columns(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


_HISTORY_PARAMS = (
    Param("last", {"type": "integer", "minimum": 1}, "newest N rows (at most 1000000 are returned)", _integer),
    Param("since", {"type": "number"}, "rows at or after this epoch time", float),
    Param(
        "columns",
        {"type": "array", "items": {"type": "string", "enum": list(COLUMNS)}},
        "comma-separated column names (default: all)",
        _columns,
        explode=False,
    ),
    Param(
        "source",
        {"type": "string", "enum": ["memory", "store"]},
        "memory: the in-memory ring (default); store: the history file, which survives restarts "
        "(rows are means over history_db_interval or longer)",
        str,
    ),
    Param(
        "points",
        {"type": "integer", "minimum": 10, "maximum": 5000},
        "with source=store: merge rows into at most this many (default 500)",
        _integer,
    ),
)


#: The largest PID Linux hands out (``PID_MAX_LIMIT`` on 64-bit kernels).
PID_MAX = 4_194_304

#: ``?pid=N`` on every endpoint that forwards: answered by process N of this pre-fork server.
PID_PARAM = Param(
    "pid",
    {"type": "integer", "minimum": 1, "maximum": PID_MAX},
    "answer for process N of this pre-fork server (master or worker), whichever process got "
    "the request: it is forwarded over N's control channel, and the answer carries "
    "X-Memdiag-Pid; 404 if N is not a memdiag process of this server, 502 if it did not answer",
    _integer,
)


# -- the table ----------------------------------------------------------------------------


@record
class Endpoint:
    """One method of one path: who answers, what it checks, and how it is documented.

    Attributes:
        handler: the :class:`~memdiag.http.core.MemoryAPI` method that answers.
        summary, operation_id: for the document.
        ok: the 200 answer's schema (a component name, or an inline schema) and media type.
        auth: needs the bearer token (401 otherwise).
        acting: changes state: rate-limited per client (429), by the limiter of the process
            that acts (a forwarded request's target, not the process that forwarded it).
        quick: a method answering from a cache without blocking, or ``None``.
        body: the request body's schema name in :data:`REQUEST_SCHEMAS`.
        params: query parameters.
        extra: statuses beyond those the checks above imply (409, 500, 501).
        also_ok: statuses answered with the ``ok`` body too (health's 503 "fail").
        forwards: ``?pid=N`` is answered by process N of the server (:data:`PID_PARAM` is
            added to ``params`` in :data:`ROUTES`; 404 and 502 join its statuses).
    """

    handler: str
    summary: str
    operation_id: str
    ok: str | Schema
    ok_media: str = JSON_TYPE
    auth: bool = True
    acting: bool = False
    quick: str | None = None
    body: str | None = None
    params: tuple[Param, ...] = ()
    extra: tuple[int, ...] = ()
    also_ok: tuple[int, ...] = ()  # statuses that carry the ``ok`` body too (health's 503)
    forwards: bool = True  # under API_PREFIX only (see ROUTES)


def statuses(endpoint: Endpoint) -> tuple[int, ...]:
    """Every status ``endpoint`` may answer, as the checks in :mod:`memdiag.http.core` run."""
    codes = {200, 413, *endpoint.extra, *endpoint.also_ok}  # 413: the size check runs on every endpoint
    if endpoint.auth:
        codes.add(401)
    if endpoint.body:
        codes |= {400, 415, 422}
    if endpoint.params:
        codes.add(422)
    if endpoint.acting:
        codes.add(429)
    if endpoint.forwards:
        codes |= {404, 502}  # not a process of this server; it did not answer
    return tuple(sorted(codes))


_P = API_PREFIX

# path -> method -> endpoint. HEAD is served wherever GET is; OPTIONS everywhere.
# Every endpoint under the prefix forwards ``?pid=`` except the server view and the
# document, which are the same whichever process answers them.
_TABLE: dict[str, dict[str, Endpoint]] = {
    f"{_P}/status": {
        "GET": Endpoint(
            "_status", "Short status: pressure level, RSS, children", "getStatus", "Status", quick="_cached"
        )
    },
    f"{_P}/profile": {
        "GET": Endpoint("_profile", "Current memory profile", "getProfile", "Profile", quick="_cached")
    },
    f"{_P}/diagnostics": {
        "GET": Endpoint(
            "_diagnostics",
            "Full diagnostics (config redacted, command lines redacted)",
            "getDiagnostics",
            "Diagnostics",
        )
    },
    f"{_P}/cleanup": {
        "POST": Endpoint(
            "_cleanup",
            "Run the cleanup ladder (single-flight; cooldown unless force)",
            "postCleanup",
            "CleanupResult",
            acting=True,
            body="CleanupRequest",
        )
    },
    f"{_P}/cache/metrics": {
        "GET": Endpoint(
            "_cache_metrics", "Metrics of every registered cache and their total", "getCacheMetrics", "CacheMetrics"
        )
    },
    f"{_P}/configure": {
        "GET": Endpoint(
            "_get_config",
            "The configuration in force (secrets redacted) and every field's rules",
            "getConfig",
            "ConfigView",
        ),
        "POST": Endpoint(
            "_configure",
            "Partial config update, validated as a whole",
            "postConfigure",
            "ConfigureResult",
            acting=True,
            body="ConfigureRequest",
            extra=(500,),  # persisting failed; nothing was changed
        ),
    },
    f"{_P}/history": {
        "GET": Endpoint(
            "_history", "Recent samples (columns x rows) and trends", "getHistory", "History", params=_HISTORY_PARAMS
        )
    },
    f"{_P}/leaks": {"GET": Endpoint("_leaks", "Leak suspects", "getLeaks", "LeaksReport", extra=(501,))},
    f"{_P}/heap": {
        "GET": Endpoint(
            "_heap",
            "The live heap now: sites with stacks and live/allocated bytes",
            "getHeap",
            {"type": "object"},
            extra=(409, 501),  # 409: the heap profile does not run here
        )
    },
    f"{_P}/leaks/trace": {
        "POST": Endpoint(
            "_trace",
            "Open a bounded allocation-tracing window",
            "postTrace",
            {"type": "object"},
            acting=True,
            body="TraceRequest",
            extra=(409, 501),
        )
    },
    f"{_P}/server": {
        "GET": Endpoint(
            "_server",
            "A pre-fork server whole: every process (master and workers) and their sum",
            "getServer",
            {"type": "object"},
            forwards=False,
        )
    },
    f"{_P}/health": {
        "GET": Endpoint(
            "_health",
            "Health with memory: pass/warn/fail (pressure alone is warn)",
            "getHealth",
            "Health",
            ok_media=HEALTH_TYPE,
            auth=False,
            also_ok=(503,),
            quick="_health_if_built",
        )
    },
    f"{_P}/openapi.json": {
        "GET": Endpoint(
            "_openapi", "This document", "getOpenAPI", {"type": "object"}, quick="_openapi_if_built", forwards=False
        )
    },
    "/metrics": {
        "GET": Endpoint(
            "_metrics",
            "Prometheus text exposition (process_* and memdiag_* families)",
            "getMetrics",
            {"type": "string"},
            ok_media="text/plain",
            auth=False,
        )
    },
    # The page holds no data: it reads the token from its URL fragment and calls the API.
    "/memory/dashboard": {
        "GET": Endpoint(
            "_dashboard",
            "The dashboard page (holds no data; pass the token in the URL fragment)",
            "getDashboard",
            {"type": "string"},
            ok_media="text/html",
            auth=False,
            extra=(501,),
        )
    },
}



def _with_pid(path: str, endpoint: Endpoint) -> Endpoint:
    if not path.startswith(API_PREFIX) or not endpoint.forwards:
        return replace(endpoint, forwards=False)
    return replace(endpoint, params=(*endpoint.params, PID_PARAM))


ROUTES: dict[str, dict[str, Endpoint]] = {
    path: {method: _with_pid(path, e) for method, e in methods.items()} for path, methods in _TABLE.items()
}

#: Every path the API answers; adapters mount exactly these (plus a catch-all under
#: :data:`API_PREFIX` so unknown API paths get the core's 404).
PATHS: tuple[str, ...] = tuple(ROUTES)


def _allow(path: str) -> str:
    methods = set(ROUTES[path])
    if "GET" in methods:
        methods.add("HEAD")
    methods.add("OPTIONS")
    return ", ".join(m for m in ("GET", "HEAD", "POST", "OPTIONS") if m in methods)


_ALLOW = {path: _allow(path) for path in ROUTES}


def allow(path: str) -> str:
    """The ``Allow`` header of ``path``: its methods, HEAD with GET, and OPTIONS."""
    return _ALLOW[path]
