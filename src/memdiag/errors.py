"""Exceptions raised by memdiag's public API."""

from __future__ import annotations

__all__ = ["ConfigError", "MemdiagError", "MissingExtraError", "ProcessNotOwnedError"]


class MemdiagError(Exception):
    """Base class of every error memdiag raises on purpose."""


class ConfigError(MemdiagError, ValueError):
    """An invalid configuration value; nothing was changed.

    Attributes:
        errors: ``{field: reason}`` for every invalid field in the update.
    """

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        detail = "; ".join(f"{field}: {reason}" for field, reason in sorted(self.errors.items()))
        super().__init__(f"invalid configuration: {detail}")


class MissingExtraError(MemdiagError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{module}' package: pip install 'memdiag[{extra}]'",
            name=module,
        )
        self.extra = extra


class ProcessNotOwnedError(MemdiagError, PermissionError):
    """memdiag refused to signal a process the service does not own."""
