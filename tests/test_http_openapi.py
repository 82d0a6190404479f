"""Property-based fuzzing of the live standalone server against its own OpenAPI document.

schemathesis generates requests from ``/api/memory/openapi.json`` (valid ones, and with
``negative`` mode invalid ones) and checks every answer: no 5xx, a documented status
code, the documented content type and headers, and a body that fits the schema.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from memdiag.config import MemoryConfig
from memdiag.http.server import ApiServer, start_api_server
from memdiag.service import MemoryDiagnostics

TOKEN = "fuzz-token-0123456789abcdef"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Opening tracemalloc windows from generated requests would slow the whole test process
# 10x (see DESIGN.md); the trace endpoint's valid requests are tested in test_http_api.
POSITIVE_SKIP = {"POST /api/memory/leaks/trace"}
EXAMPLES = 25
# The endpoints under the prefix that answer alike in every process: ?pid= is not theirs.
UNFORWARDED = {"/api/memory/server", "/api/memory/openapi.json"}


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[ApiServer, schemathesis.BaseSchema]]:
    diag = MemoryDiagnostics(
        # No profile ticks: their gc.get_objects() races tuple(<generator>) in other
        # threads (a CPython issue; see test_http_api._config).
        MemoryConfig(
            enable_profiling=False,
            sample_interval=0.2,
            profile_interval=1.0,
            enable_auto_cleanup=False,
            api_token=TOKEN,
        )
    )
    diag.start()
    server = start_api_server(diag, "127.0.0.1", 0, announce=False, rate_limit=None)
    try:
        # The document as the server serves it (it needs the token, like every API path).
        spec = httpx.get(f"{server.url}/api/memory/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        yield server, schemathesis.openapi.from_dict(spec)
    finally:
        server.close()
        diag.close()


def _cases() -> list[tuple[str, GenerationMode]]:
    """Every operation with valid data, and those with parameters or a body with invalid data."""
    from memdiag.http.openapi import openapi_spec

    out = []
    for path, item in openapi_spec()["paths"].items():
        for method, op in item.items():
            label = f"{method.upper()} {path}"
            if label not in POSITIVE_SKIP:
                out.append((label, GenerationMode.POSITIVE))
            if op.get("parameters") or op.get("requestBody"):
                out.append((label, GenerationMode.NEGATIVE))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("label", "mode"), _cases(), ids=lambda v: v if isinstance(v, str) else v.value)
def test_fuzz_operation(live: tuple[ApiServer, schemathesis.BaseSchema], label: str, mode: GenerationMode) -> None:
    server, schema = live
    method, path = label.split(" ", 1)
    operation = schema[path][method]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=server.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            checks=CHECKS,
        )

    run()


# -- the document against the route table and the validators, route by route ------------------


def _samples(schema: dict) -> list[tuple[object, bool]]:
    """``(value, valid?)`` pairs at and just beyond what ``schema`` allows, and of the wrong type."""
    out: list[tuple[object, bool]] = []
    inner = next((s for s in schema.get("anyOf", []) if s.get("type") != "null"), schema)
    kinds = inner.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    if "null" in kinds or any(s.get("type") == "null" for s in schema.get("anyOf", [])):
        out.append((None, True))
    if "enum" in inner:
        out += [(inner["enum"][0], True), ("not-a-choice", False)]
    elif "boolean" in kinds:
        out += [(True, True), ("yes", False)]
    elif "integer" in kinds or "number" in kinds:
        lo, hi = inner.get("minimum"), inner.get("maximum")
        step = 1 if "integer" in kinds else max(abs(lo or 0), abs(hi or 0), 1) * 1e-9
        cast = int if "integer" in kinds else float
        if lo is not None:
            out += [(cast(lo), True), (cast(lo) - step, False)]
        if hi is not None:
            out += [(cast(hi), True), (cast(hi) + (step if "integer" in kinds else max(step, 1.0)), False)]
        if "exclusiveMinimum" in inner:
            out += [(cast(inner["exclusiveMinimum"]), False), (cast(inner["exclusiveMinimum"]) + 0.5, True)]
        # Far beyond, whatever the document says: it must say what the validator does.
        far = 10**20 if "integer" in kinds else 1e300
        out += [(far, hi is None), (-far, lo is None and "exclusiveMinimum" not in inner)]
        out.append(("5", False))
        if "integer" in kinds:
            out.append((2.5, False))
    elif "string" in kinds:
        out += [("text", True), (5, False)]
    return out


def _documented(doc: dict, schema: dict, value: object) -> bool:
    """What an independent JSON Schema validator says of ``value`` (refs resolved in ``doc``)."""
    import jsonschema

    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).is_valid(value)


def test_every_route_is_documented_as_it_is_served(diag: MemoryDiagnostics) -> None:
    """Walk the route table: methods, auth, statuses, and every body field's and query
    parameter's bounds, as the served document says and as the handler answers."""
    from memdiag.http.core import MemoryAPI
    from memdiag.http.routes import API_PREFIX, PID_MAX, ROUTES

    api = MemoryAPI(diag, TOKEN, rate_limit=None)
    limited = MemoryAPI(diag, TOKEN, rate_limit=(0.001, 1))
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    doc = json.loads(api.handle("GET", "/api/memory/openapi.json", {}, auth, b"").body)
    assert {p: sorted(m) for p, m in doc["paths"].items()} == {
        p: sorted(m.lower() for m in methods) for p, methods in ROUTES.items()
    }
    checked = 0
    for path, methods in ROUTES.items():
        allow = api.handle("OPTIONS", path, {}, {}, b"").header("Allow") or ""
        assert {m.lower() for m in methods} == {m.lower() for m in allow.split(", ")} - {"head", "options"}
        for method, endpoint in methods.items():
            op = doc["paths"][path][method.lower()]
            documented = {int(code) for code in op["responses"]}
            seen = set()
            anonymous = api.handle(method, path, {}, {"Content-Type": "application/json"}, b"").status
            assert (anonymous == 401) == ("security" not in op), (path, method)
            seen.add(anonymous)
            big = api.handle(method, path, {}, auth, b" " * (api.max_body + 1))
            seen.add(big.status)
            assert big.status == 413
            if endpoint.body:
                for body, ctype, status in ((b"{", "application/json", 400), (b"{}", "text/plain", 415)):
                    seen.add(api.handle(method, path, {}, {**auth, "Content-Type": ctype}, body).status)
                    assert status in seen
                schema = doc["components"]["schemas"][endpoint.body]
                for name, prop in schema["properties"].items():
                    for value, valid in _samples(prop):
                        assert _documented(doc, prop, value) == valid, (path, name, value)
                        # An unknown field beside it: 422, nothing acts, and the answer names
                        # every field the validator refuses (the others' values are checked too).
                        body = json.dumps({name: value, "no_such_field": 1}).encode()
                        r = api.handle(method, path, {}, auth, body)
                        seen.add(r.status)
                        refused = json.loads(r.body)["fields"]
                        assert r.status == 422 and "no_such_field" in refused
                        if valid and name in refused:
                            # Only a rule between fields (JSON Schema cannot carry it) may
                            # refuse a documented value: it names the other field.
                            others = set(schema["properties"]) - {name}
                            assert any(o in refused[name] for o in others), (path, name, value, refused)
                            assert "relations" in schema.get("description", ""), path
                            continue
                        assert (name not in refused) == valid, (path, name, value, refused)
                        checked += 1
            for param in op.get("parameters", []):
                items = param["schema"].get("items", param["schema"])
                for value, valid in _samples(items):
                    if value is None or (isinstance(value, str) and items.get("type") in ("integer", "number")):
                        continue  # in a query string every value is text
                    assert _documented(doc, items, value) == valid
                    text = str(value).lower() if isinstance(value, bool) else str(value)
                    r = api.handle(method, path, {param["name"]: text}, auth, b"")
                    seen.add(r.status)
                    refused = json.loads(r.body).get("fields", {}) if r.status == 422 else {}
                    assert (param["name"] not in refused) == valid, (path, param["name"], text, r.status)
                    checked += 1
            params = {p["name"] for p in op.get("parameters", [])}
            assert ("pid" in params) == endpoint.forwards == (path.startswith(API_PREFIX) and path not in UNFORWARDED)
            if endpoint.forwards:  # ?pid=: a bad value is a 422 naming it; a PID not of this server, the 404
                for text, code in (("abc", 422), ("0", 422), (str(PID_MAX + 1), 422), (str(os.getppid()), 404)):
                    r = api.handle(method, path, {"pid": text}, auth, b"")
                    seen.add(r.status)
                    assert r.status == code, (path, method, text, r.status, r.body)
                    answer = json.loads(r.body)
                    if code == 422:
                        assert "process id" in answer["fields"]["pid"]
                    else:
                        assert "not a memdiag process of this server" in answer["detail"]
            if endpoint.acting:  # the bucket holds one request: the second is refused
                for _ in range(2):
                    seen.add(limited.handle(method, path, {}, auth, b'{"no_such_field": 1}').status)
                assert 429 in seen
            assert seen <= documented, (path, method, seen - documented)
    assert checked > 100
