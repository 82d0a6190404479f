"""``GET /api/memory/openapi.json``: the OpenAPI 3.1 description of every endpoint.

Generated from the route table that serves the requests (:data:`memdiag.http.routes.ROUTES`):
its paths and methods, each endpoint's query parameters and request body (the very schemas
the handler validates with, config bounds from :attr:`memdiag.config.FieldInfo.bounds`)
and the statuses its checks can answer (:func:`memdiag.http.routes.statuses`). Only the
response bodies' shapes are written here. ``tests/test_http_openapi.py`` walks every route
against the document and fuzzes the live server with schemathesis.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__
from ..config import FIELD_INFO
from ..history import COLUMNS
from ..pressure import LEVELS
from .routes import DEFAULT_MAX_BODY, REQUEST_SCHEMAS, ROUTES, Endpoint, field_schema, statuses

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


LEVEL: Schema = {"type": "string", "enum": list(LEVELS)}  # the one level ordering


def _cleanup_result() -> Schema:
    """``CleanupResult``: one ladder run and each of its actions."""
    action = _obj(
        {
            "name": STR,
            "freed_bytes": INT,
            "rss_freed_bytes": INT,
            "reported_bytes": _null(INT),
            "released_logical_bytes": _null(INT),
            "scope": STR,
            "seconds": NUM,
            "count": _null(INT),
            "detail": STR,
            "skipped": _null(STR),
            "error": _null(STR),
        }
    )
    return _obj(
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
            "process_freed_bytes": INT,
            "children_freed_bytes": INT,
            "released_logical_bytes": INT,
            "rss_before": _null(INT),
            "rss_after": _null(INT),
            "rss_freed_bytes": _null(INT),
            "started_at": NUM,
            "seconds": NUM,
        }
    )


def _status() -> Schema:
    """``Status``: the cheap health summary."""
    reason = _obj({"signal": STR, "value": NUM, "threshold": _null(NUM)})
    return _obj(
        {
            "status": LEVEL,
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


def _profile() -> Schema:
    """``Profile``: the process, its host, cgroup, children, caches and pressure."""
    pressure = _obj({"level": LEVEL, "raw_level": LEVEL, "since": NUM, "reasons": _arr(OBJ), "signals": _arr(OBJ)})
    process = _obj(
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
    )
    return _obj(
        {
            "timestamp": NUM,
            "pid": INT,
            "process": process,
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


def _diagnostics() -> Schema:
    """``Diagnostics``: the profile, the configuration, the subprocesses and the rest."""
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
    return _obj(
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


def _field_info() -> Schema:
    """One configuration field's description in ``ConfigView``."""
    return _obj(
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


def _cache_metrics() -> Schema:
    """``CacheMetrics``: every managed cache and their totals."""
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
    return _obj({"caches": _arr(_obj({"name": STR})), "total": totals, "pressure_threshold": NUM})


def _schemas() -> dict[str, Schema]:
    """Every named schema of ``components.schemas``: the responses' and the requests'."""
    return {
        "Error": _obj({"error": STR}, {"detail": {}}),
        "ValidationError": _obj({"error": STR, "fields": {"type": "object", "additionalProperties": STR}}),
        "Busy": _obj({"error": STR, "retry_after_seconds": NUM}, {"detail": {}, "result": _ref("CleanupResult")}),
        "Status": _status(),
        "Profile": _profile(),
        "Diagnostics": _diagnostics(),
        "CleanupResult": _cleanup_result(),
        "CacheMetrics": _cache_metrics(),
        "Config": _obj({name: field_schema(name, request=False) for name in FIELD_INFO}, closed=True),
        "ConfigView": _obj(
            {"config": _ref("Config"), "fields": {"type": "object", "additionalProperties": _field_info()}}
        ),
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
        **REQUEST_SCHEMAS,
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
        404: ("Error", "pid: not a memdiag process of this pre-fork server"),
        409: ("Error", "conflicts with what is running"),
        413: ("Error", f"body larger than {DEFAULT_MAX_BODY} bytes (the default limit)"),
        415: ("Error", "body is not application/json"),
        422: ("ValidationError", "invalid fields or values; nothing changed"),
        429: ("Busy", "a cleanup is running, the cooldown holds, or the client's rate limit is spent"),
        500: ("Error", "the configuration could not be saved; nothing was changed"),
        501: ("Error", "that part of memdiag is not installed"),
        502: ("Error", "pid: that process did not answer over its control channel"),
    }
    out = {}
    for code in codes:
        name, text = texts[code]
        headers = _RETRY_AFTER if code == 429 else _WWW_AUTH if code == 401 else None
        out[str(code)] = _json(_ref(name), text, headers=headers)
    return out


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    ok = _ref(endpoint.ok) if isinstance(endpoint.ok, str) else endpoint.ok
    responses: dict[str, Any] = {}
    for code in statuses(endpoint):
        if code == 200:
            responses["200"] = _json(ok, "success", endpoint.ok_media)
        elif code in endpoint.also_ok:
            responses[str(code)] = _json(ok, "see the body", endpoint.ok_media)
        else:
            responses.update(_errors(code))
    op: dict[str, Any] = {"summary": endpoint.summary, "operationId": endpoint.operation_id, "responses": responses}
    if not endpoint.auth:
        op["security"] = []
    if endpoint.params:
        op["parameters"] = [p.openapi() for p in endpoint.params]
    if endpoint.body:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": _ref(endpoint.body)}}}
    return op


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document for the memory API (paths relative to the mount point)."""
    paths = {path: {m.lower(): _operation(e) for m, e in methods.items()} for path, methods in ROUTES.items()}
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
