"""``GET /api/memory/openapi.json``: the OpenAPI 3.1 description of every endpoint.

Written by hand from the same tables the handler uses (config fields from
:data:`memdiag.config.FIELD_INFO`, history columns from :data:`memdiag.history.COLUMNS`),
so it cannot drift from what the API accepts; the test suite fuzzes the live server
against it with schemathesis.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__
from ..config import FIELD_INFO
from ..history import COLUMNS
from .core import API_PREFIX, DEFAULT_MAX_BODY, READ_ONLY_FIELDS

__all__ = ["openapi_spec"]

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
OBJ: Schema = {"type": "object"}


def _null(schema: Schema) -> Schema:
    """``schema`` or null."""
    if "type" in schema and len(schema) == 1:
        return {"type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None, *, closed: bool = False) -> Schema:
    out: Schema = {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }
    if closed:
        out["additionalProperties"] = False
    return out


def _arr(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _field_schema(name: str, *, request: bool) -> Schema:
    info = FIELD_INFO[name]
    base: Schema = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[info.type]}
    if request:
        if info.ratio:
            base.update(minimum=0.0, maximum=1.0)
        else:
            if info.min is not None:
                base["minimum"] = info.min
            if info.max is not None:
                base["maximum"] = info.max
        if info.choices:
            base["enum"] = list(info.choices)
    elif info.choices:
        base["enum"] = list(info.choices)
    schema = dict(_null(base)) if info.nullable else base
    schema["description"] = info.help + (" (read-only over HTTP)" if name in READ_ONLY_FIELDS else "")
    return schema


def _schemas() -> dict[str, Schema]:
    level = {"type": "string", "enum": ["ok", "warning", "critical"]}
    reason = _obj({"signal": STR, "value": NUM, "threshold": _null(NUM)})
    action = _obj(
        {
            "name": STR,
            "freed_bytes": INT,
            "rss_freed_bytes": INT,
            "reported_bytes": _null(INT),
            "seconds": NUM,
            "count": _null(INT),
            "detail": STR,
            "skipped": _null(STR),
            "error": _null(STR),
        }
    )
    cleanup_result = _obj(
        {
            "performed": BOOL,
            "reason": STR,
            "dry_run": BOOL,
            "skipped_reason": _null(STR),
            "retry_after_seconds": _null(NUM),
            "level_before": STR,
            "level_after": _null(STR),
            "resolved": BOOL,
            "actions": _arr(action),
            "actions_taken": _arr(STR),
            "freed_bytes": INT,
            "rss_before": _null(INT),
            "rss_after": _null(INT),
            "rss_freed_bytes": _null(INT),
            "started_at": NUM,
            "seconds": NUM,
        }
    )
    status = _obj(
        {
            "status": level,
            "pressure_detected": BOOL,
            "pid": INT,
            "rss_bytes": _null(INT),
            "threshold_bytes": INT,
            "system_percent": _null(NUM),
            "cgroup_usage_ratio": _null(NUM),
            "children": INT,
            "zombies": INT,
            "reasons": _arr(reason),
            "monitor_running": BOOL,
            "auto_cleanup": BOOL,
            "last_cleanup": _null(_ref("CleanupResult")),
            "cleanup_retry_after_seconds": NUM,
            "timestamp": NUM,
        }
    )
    pressure = _obj({"level": level, "raw_level": level, "since": NUM, "reasons": _arr(OBJ), "signals": _arr(OBJ)})
    profile = _obj(
        {
            "timestamp": NUM,
            "pid": INT,
            "process": _obj(
                {
                    "pid": INT,
                    "rss_bytes": _null(INT),
                    "uss_bytes": _null(INT),
                    "pss_bytes": _null(INT),
                    "swap_bytes": _null(INT),
                    "threshold_bytes": INT,
                    "percent_of_threshold": _null(NUM),
                    "threads": _null(INT),
                    "fds": _null(INT),
                    "cpu_seconds": _null(NUM),
                }
            ),
            "system": _null(OBJ),
            "cgroup": _null(OBJ),
            "psi": _null(OBJ),
            "python": OBJ,
            "children": _obj({"count": INT, "rss_bytes": INT, "zombies": INT, "threshold_bytes": INT}),
            "caches": _arr(OBJ),
            "pressure": pressure,
            "monitor": _obj({"running": BOOL, "sample_interval": NUM, "ticks": INT, "last_error": _null(STR)}),
            "extra": OBJ,
        }
    )
    subprocess = _obj(
        {
            "pid": INT,
            "ppid": INT,
            "name": STR,
            "state": STR,
            "zombie": BOOL,
            "rss_bytes": _null(INT),
            "uss_bytes": _null(INT),
            "pss_bytes": _null(INT),
        },
        {"cmdline": _null(_arr(STR))},
    )
    diagnostics = _obj(
        {
            "profile": _ref("Profile"),
            "config": _ref("Config"),
            "subprocesses": _arr(subprocess),
            "trends": OBJ,
            "pressure_events": _arr(OBJ),
            "cleanup": _obj(
                {"last": _null(_ref("CleanupResult")), "runs": {"type": "object", "additionalProperties": INT}}
            ),
            "history": OBJ,
            "overhead": OBJ,
        }
    )
    config = _obj({name: _field_schema(name, request=False) for name in FIELD_INFO}, closed=True)
    field_info = _obj(
        {
            "type": {"type": "string", "enum": ["bool", "int", "float", "str"]},
            "nullable": BOOL,
            "default": {},
            "help": STR,
            "min": _null(NUM),
            "max": _null(NUM),
            "choices": _null(_arr(STR)),
            "read_only": BOOL,
        }
    )
    writable = [n for n in FIELD_INFO if n not in READ_ONLY_FIELDS]
    configure_request = {
        "type": "object",
        "description": "A partial update: any writable config fields, validated as a whole; "
        "`persist` also writes them to the config file.",
        "properties": {
            "persist": {"type": "boolean", "default": False},
            **{n: _field_schema(n, request=True) for n in writable},
        },
        "additionalProperties": False,
    }
    totals = _obj(
        {
            "caches": INT,
            "entries": _null(NUM),
            "bytes": _null(NUM),
            "max_bytes": _null(NUM),
            "hits": _null(NUM),
            "misses": _null(NUM),
            "evictions": _null(NUM),
            "hit_ratio": _null(NUM),
            "fill_ratio": _null(NUM),
        }
    )
    return {
        "Error": _obj({"error": STR}, {"detail": {}}),
        "ValidationError": _obj({"error": STR, "fields": {"type": "object", "additionalProperties": STR}}),
        "Busy": _obj({"error": STR, "retry_after_seconds": NUM}, {"detail": {}, "result": _ref("CleanupResult")}),
        "Status": status,
        "Profile": profile,
        "Diagnostics": diagnostics,
        "CleanupRequest": {
            "type": "object",
            "properties": {
                "force": {
                    "type": "boolean",
                    "default": False,
                    "description": "ignore the cooldown; run emergency rungs",
                },
                "dry_run": {**_null(BOOL), "description": "report only (null: the config's cleanup_dry_run)"},
            },
            "additionalProperties": False,
        },
        "CleanupResult": cleanup_result,
        "CacheMetrics": _obj({"caches": _arr(_obj({"name": STR})), "total": totals, "pressure_threshold": NUM}),
        "Config": config,
        "ConfigView": _obj(
            {"config": _ref("Config"), "fields": {"type": "object", "additionalProperties": field_info}}
        ),
        "ConfigureRequest": configure_request,
        "ConfigureResult": _obj({"config": _ref("Config"), "changed": _arr(STR), "persisted": BOOL}),
        "History": _obj(
            {
                "columns": _arr({"type": "string", "enum": list(COLUMNS)}),
                "rows": _arr(_arr(_null(NUM))),
                "trends": OBJ,
            }
        ),
        "Health": _obj(
            {
                "status": {"type": "string", "enum": ["pass", "warn", "fail"]},
                "checks": {"type": "object", "additionalProperties": _arr(OBJ)},
            },
            {"version": STR, "releaseId": STR, "description": STR, "memory": _ref("Status"), "notes": _arr(STR)},
        ),
        "LeaksReport": _obj({"suspects": _arr(OBJ)}),
        "TraceRequest": {
            "type": "object",
            "properties": {"seconds": {"type": "number", "exclusiveMinimum": 0, "description": "window length"}},
            "additionalProperties": False,
        },
    }


def _json(
    schema: Schema, description: str, media: str = "application/json", headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {media: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}}
_WWW_AUTH = {"WWW-Authenticate": {"description": "the Bearer challenge", "schema": STR}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: ("Error", "malformed JSON"),
        401: ("Error", "missing or wrong bearer token"),
        409: ("Error", "conflicts with what is running"),
        413: ("Error", f"body larger than {DEFAULT_MAX_BODY} bytes (the default limit)"),
        415: ("Error", "body is not application/json"),
        422: ("ValidationError", "invalid fields or values; nothing changed"),
        429: ("Busy", "a cleanup is running, the cooldown holds, or the client's rate limit is spent"),
        501: ("Error", "that part of memdiag is not installed"),
    }
    out = {}
    for code in codes:
        name, text = texts[code]
        headers = _RETRY_AFTER if code == 429 else _WWW_AUTH if code == 401 else None
        out[str(code)] = _json(_ref(name), text, headers=headers)
    return out


def _op(
    summary: str, ok: dict[str, Any], *codes: int, public: bool = False, body: str | None = None, **extra: Any
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": extra.pop("operation_id"),
        "responses": {"200": ok, **_errors(*codes)},
    }
    if public:
        op["security"] = []
    if body:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": _ref(body)}}}
    op.update(extra)
    return op


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document for the memory API (paths relative to the mount point)."""
    p = API_PREFIX
    paths: dict[str, Any] = {
        f"{p}/status": {
            "get": _op(
                "Short status: pressure level, RSS, children",
                _json(_ref("Status"), "status"),
                401,
                operation_id="getStatus",
            )
        },
        f"{p}/profile": {
            "get": _op("Current memory profile", _json(_ref("Profile"), "profile"), 401, operation_id="getProfile")
        },
        f"{p}/diagnostics": {
            "get": _op(
                "Full diagnostics (config redacted, command lines redacted)",
                _json(_ref("Diagnostics"), "diagnostics"),
                401,
                operation_id="getDiagnostics",
            )
        },
        f"{p}/cleanup": {
            "post": _op(
                "Run the cleanup ladder (single-flight; cooldown unless force)",
                _json(_ref("CleanupResult"), "the cleanup ran"),
                400,
                401,
                413,
                415,
                422,
                429,
                body="CleanupRequest",
                operation_id="postCleanup",
            )
        },
        f"{p}/cache/metrics": {
            "get": _op(
                "Metrics of every registered cache and their total",
                _json(_ref("CacheMetrics"), "cache metrics"),
                401,
                operation_id="getCacheMetrics",
            )
        },
        f"{p}/configure": {
            "get": _op(
                "The configuration in force (secrets redacted) and every field's rules",
                _json(_ref("ConfigView"), "config"),
                401,
                operation_id="getConfig",
            ),
            "post": _op(
                "Partial config update, validated as a whole",
                _json(_ref("ConfigureResult"), "the new configuration"),
                400,
                401,
                413,
                415,
                422,
                429,
                body="ConfigureRequest",
                operation_id="postConfigure",
            ),
        },
        f"{p}/history": {
            "get": _op(
                "Recent samples (columns x rows) and trends",
                _json(_ref("History"), "history"),
                401,
                422,
                operation_id="getHistory",
                parameters=[
                    {
                        "name": "last",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1},
                        "description": "newest N rows",
                    },
                    {"name": "since", "in": "query", "schema": NUM, "description": "rows at or after this epoch time"},
                    {
                        "name": "columns",
                        "in": "query",
                        "style": "form",
                        "explode": False,
                        "schema": _arr({"type": "string", "enum": list(COLUMNS)}),
                        "description": "comma-separated column names (default: all)",
                    },
                ],
            )
        },
        f"{p}/leaks": {
            "get": _op("Leak suspects", _json(_ref("LeaksReport"), "leak report"), 401, 501, operation_id="getLeaks")
        },
        f"{p}/leaks/trace": {
            "post": _op(
                "Open a bounded allocation-tracing window",
                _json(OBJ, "the tracing window"),
                400,
                401,
                409,
                413,
                415,
                422,
                429,
                501,
                body="TraceRequest",
                operation_id="postTrace",
            )
        },
        f"{p}/health": {
            "get": {
                "summary": "Health with memory: pass/warn/fail (pressure alone is warn)",
                "operationId": "getHealth",
                "security": [],
                "responses": {
                    "200": _json(_ref("Health"), "pass or warn", "application/health+json"),
                    "503": _json(_ref("Health"), "fail", "application/health+json"),
                },
            }
        },
        f"{p}/openapi.json": {"get": _op("This document", _json(OBJ, "OpenAPI 3.1"), 401, operation_id="getOpenAPI")},
        "/metrics": {
            "get": _op(
                "Prometheus text exposition (process_* and memdiag_* families)",
                _json(STR, "metrics", "text/plain"),
                public=True,
                operation_id="getMetrics",
            )
        },
        "/memory/dashboard": {
            "get": _op(
                "The dashboard page (holds no data; pass the token in the URL fragment)",
                _json(STR, "HTML page", "text/html"),
                501,
                public=True,
                operation_id="getDashboard",
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "memdiag memory API",
            "version": __version__,
            "description": "Memory diagnostics of this service. Every endpoint except health, "
            "metrics and the dashboard page needs `Authorization: Bearer <token>`.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }
