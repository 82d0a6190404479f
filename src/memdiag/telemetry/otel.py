"""OpenTelemetry export (placeholder until the SDK wiring lands)."""

from __future__ import annotations

from typing import Any

__all__ = ["configured", "install"]


def configured() -> bool:
    return False


def install(diag: Any) -> bool:
    return False
