"""MemoryConfig: the spec's defaults, validation as a whole, layers, atomic persistence."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from memdiag.config import FIELD_INFO, MemoryConfig, load_config, save_config
from memdiag.errors import ConfigError


def test_spec_defaults_exactly() -> None:
    cfg = MemoryConfig()
    assert cfg.enable_profiling is True
    assert cfg.profile_interval == 60
    assert cfg.memory_threshold_mb == 500
    assert cfg.cache_pressure_threshold == 0.8
    assert cfg.subprocess_threshold_mb == 1000
    assert cfg.enable_auto_cleanup is True
    assert cfg.cleanup_cooldown == 300
    assert 1 <= cfg.sample_interval <= 2


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"memory_threshold_mb": -5}, "memory_threshold_mb", ">= 1"),
        ({"memory_threshold_mb": "lots"}, "memory_threshold_mb", "number"),
        ({"cache_pressure_threshold": 1.5}, "cache_pressure_threshold", "between 0 and 1"),
        ({"enable_auto_cleanup": "maybe"}, "enable_auto_cleanup", "boolean"),
        ({"no_such_field": 1}, "no_such_field", "unknown field"),
        ({"history_size": 10.5}, "history_size", "whole number"),
        ({"auto_cleanup_level": "panic"}, "auto_cleanup_level", "one of"),
        ({"sample_interval": float("nan")}, "sample_interval", "finite"),
        # Finite, but a size in bytes would overflow (found by the API fuzz).
        ({"subprocess_threshold_mb": 1.7e308}, "subprocess_threshold_mb", "at most 1e+15"),
        ({"cleanup_cooldown": 10**400}, "cleanup_cooldown", "401 digits"),
        ({"api_token": "short"}, "api_token", "16 characters"),
    ],
)
def test_invalid_update_names_field_and_changes_nothing(changes: dict, field: str, fragment: str) -> None:
    cfg = MemoryConfig()
    with pytest.raises(ConfigError) as info:
        cfg.updated(changes)
    assert field in info.value.errors
    assert fragment in info.value.errors[field]
    assert field in str(info.value)
    assert cfg == MemoryConfig()


def test_update_is_validated_as_a_whole() -> None:
    cfg = MemoryConfig()
    with pytest.raises(ConfigError) as info:
        cfg.updated({"memory_threshold_mb": 800, "cache_pressure_threshold": 2, "bogus": True})
    assert set(info.value.errors) == {"cache_pressure_threshold", "bogus"}
    assert cfg.memory_threshold_mb == 500  # the valid part was not applied either


def test_strings_are_converted_like_env_and_cli_values() -> None:
    cfg = MemoryConfig().updated(
        memory_threshold_mb="1000", enable_auto_cleanup="off", history_size="120", history_db="none"
    )
    assert cfg.memory_threshold_mb == 1000.0
    assert cfg.enable_auto_cleanup is False
    assert cfg.history_size == 120
    assert cfg.history_db is None


def test_cross_field_rule() -> None:
    with pytest.raises(ConfigError) as info:
        MemoryConfig(sample_interval=10, profile_interval=5)
    assert "profile_interval" in info.value.errors


def test_layers_defaults_file_env_overrides(tmp_path) -> None:
    path = tmp_path / "memdiag.toml"
    path.write_text("[memdiag]\nmemory_threshold_mb = 700\ncleanup_cooldown = 10\nsample_interval = 2\n")
    env = {"MEMDIAG_CLEANUP_COOLDOWN": "20", "MEMDIAG_ENABLE_AUTO_CLEANUP": "false"}
    cfg = load_config(path, environ=env, overrides={"sample_interval": 1.5})
    assert cfg.memory_threshold_mb == 700  # file
    assert cfg.cleanup_cooldown == 20  # env beats file
    assert cfg.enable_auto_cleanup is False
    assert cfg.sample_interval == 1.5  # runtime beats everything
    assert cfg.profile_interval == 60  # default


def test_bad_env_value_names_layer_and_field(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml", environ={"MEMDIAG_MEMORY_THRESHOLD_MB": "-1"})
    # an explicit path that does not exist is an error of its own
    assert "config_file" in info.value.errors
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"MEMDIAG_MEMORY_THRESHOLD_MB": "-1"})
    (key,) = info.value.errors
    assert key.startswith("memory_threshold_mb") and "environment" in key


def test_malformed_toml_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("memory_threshold_mb = = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "cannot read" in info.value.errors["config_file"]


def test_save_is_atomic_private_and_round_trips(tmp_path) -> None:
    path = tmp_path / "cfg" / "config.toml"
    save_config({"memory_threshold_mb": 900, "api_token": "x" * 20}, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    save_config({"enable_auto_cleanup": False}, path)  # merges with what is there
    cfg = load_config(path, environ={})
    assert cfg.memory_threshold_mb == 900
    assert cfg.enable_auto_cleanup is False
    assert cfg.api_token == "x" * 20
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "config.toml"]
    assert leftovers == []


def test_invalid_save_leaves_file_untouched(tmp_path) -> None:
    path = tmp_path / "config.toml"
    save_config({"memory_threshold_mb": 900}, path)
    before = path.read_bytes()
    with pytest.raises(ConfigError):
        save_config({"memory_threshold_mb": -1}, path)
    assert path.read_bytes() == before


def test_concurrent_saves_never_leave_a_torn_file(tmp_path) -> None:
    path = tmp_path / "config.toml"
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                save_config({"memory_threshold_mb": 100 + n * 100 + i}, path)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert load_config(path, environ={}).memory_threshold_mb >= 100


def test_secrets_are_redacted_in_reports() -> None:
    cfg = MemoryConfig(api_token="t" * 32, leak_webhook_url="https://user:pw@example.invalid/hook")
    d = cfg.to_dict()
    assert d["api_token"] == "***" and d["leak_webhook_url"] == "***"
    assert cfg.to_dict(redact=False)["api_token"] == "t" * 32


def test_every_field_is_described() -> None:
    for name, info in FIELD_INFO.items():
        assert info.help, name
        assert info.type in (bool, int, float, str)
