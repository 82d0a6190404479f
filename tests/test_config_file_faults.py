"""Issue 16 item 5: a non-UTF-8 or binary config file is a clear error, never a 500,
and the configuration in force is kept."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from memdiag.config import ConfigError, MemoryConfig, default_config_path, load_config
from memdiag.http.core import MemoryAPI
from memdiag.http.server import serve as serve_api
from memdiag.service import MemoryDiagnostics

TOKEN = "test-token-0123456789abcdef"
BAD_FILES = {
    "latin1": "[memdiag]\nmemory_threshold_mb = 700 # caf\xe9\n".encode("latin-1"),
    "binary": bytes(range(256)) * 4,
    "utf16": "[memdiag]\nmemory_threshold_mb = 700\n".encode("utf-16"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_load_config_names_the_file_and_the_reason(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(BAD_FILES[kind])
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.errors["config_file"]
    assert str(path) in message and ("UTF-8" in message or "TOML" in message), message


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_persisting_over_a_corrupt_file_keeps_config_and_file(kind: str) -> None:
    path = default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BAD_FILES[kind])
    diag = MemoryDiagnostics(MemoryConfig(enable_auto_cleanup=False))
    try:
        before = diag.config
        with pytest.raises(ConfigError) as info:
            diag.configure(memory_threshold_mb=900, persist=True)
        assert "config_file" in info.value.errors
        assert diag.config == before  # nothing changed
        assert path.read_bytes() == BAD_FILES[kind]  # the file is not overwritten either
    finally:
        diag.close()


def test_api_configure_over_a_corrupt_file_is_a_4xx_not_a_500() -> None:
    path = default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BAD_FILES["binary"])
    diag = MemoryDiagnostics(MemoryConfig(enable_auto_cleanup=False))
    server, thread = serve_api(MemoryAPI(diag, TOKEN), "127.0.0.1", 0)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as c:
            r = c.post("/api/memory/configure", json={"memory_threshold_mb": 900, "persist": True})
            assert r.status_code == 422, r.text
            assert "config_file" in r.json()["fields"]
            assert c.get("/api/memory/configure").json()["config"]["memory_threshold_mb"] == 500
            assert c.get("/api/memory/status").status_code == 200  # still serving
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        diag.close()
    assert os.path.exists(path)
