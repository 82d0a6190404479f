"""Configuration: the spec's defaults, validation, and the file/env/runtime layers.

Layers, lowest first: the defaults below < a TOML file (``$MEMDIAG_CONFIG``, an explicit
path, or ``$XDG_CONFIG_HOME/memdiag/config.toml``) < ``MEMDIAG_<FIELD>`` environment
variables < runtime updates (:meth:`MemoryConfig.updated`, the CLI's ``configure``,
``POST /api/memory/configure``).

A :class:`MemoryConfig` is immutable. An update is validated as a whole: if any field
is invalid, :class:`~memdiag.errors.ConfigError` names every bad field and the reason,
and the previous configuration stays in force.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from ._files import write_atomic
from ._record import field, fields, record, replace
from .errors import ConfigError
from .units import MIB

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at a command's start (~5 ms)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

__all__ = [
    "FIELD_INFO",
    "MemoryConfig",
    "active_config",
    "default_config_path",
    "load_config",
    "save_config",
]

ENV_PREFIX = "MEMDIAG_"
SECRET_FIELDS = frozenset({"api_token", "leak_webhook_url"})


def _f(default: Any, help: str, **rules: Any) -> Any:
    """A config field with its validation rules and help text in the metadata."""
    return field(default=default, metadata={"help": help, **rules})


@record
class MemoryConfig:
    """Every memdiag setting, with the specification's defaults.

    The first seven fields are the specification's, with its defaults; the rest are what
    a real monitor needs. Sizes are in MiB (the spec's "MB") as in the spec; ratios are in 0..1.
    """

    # -- the specification's fields ------------------------------------------------------
    enable_profiling: bool = _f(True, "Run the heavier profile (USS/PSS, census) every profile_interval")
    profile_interval: float = _f(60.0, "Seconds between heavier profile ticks", min=1.0)
    memory_threshold_mb: float = _f(500.0, "Process RSS (MiB) that counts as critical pressure", min=1.0)
    cache_pressure_threshold: float = _f(0.8, "Cache fill ratio (0..1) that counts as cache pressure", ratio=True)
    subprocess_threshold_mb: float = _f(1000.0, "Total RSS (MiB) of child processes that counts as critical", min=1.0)
    enable_auto_cleanup: bool = _f(True, "Run the cleanup ladder automatically on pressure")
    cleanup_cooldown: float = _f(300.0, "Seconds between cleanups (force bypasses it)", min=0.0)

    # -- monitoring ------------------------------------------------------------------------
    sample_interval: float = _f(1.0, "Seconds between cheap samples (RSS, cgroup, PSI, children)", min=0.05, max=3600.0)
    system_memory_threshold: float = _f(
        0.9, "Share of the effective limit (container limit, else system RAM) in use that is critical", ratio=True
    )
    psi_threshold: float = _f(20.0, "PSI memory 'some' avg10 (%) that is critical", min=0.0, max=100.0)
    warning_ratio: float = _f(0.8, "Warning starts at this share of each critical threshold", ratio=True)
    hysteresis: float = _f(0.1, "A level is left only below (1 - hysteresis) x its enter threshold", min=0.0, max=0.5)
    sustain_seconds: float = _f(5.0, "How long a higher level must hold before it is entered", min=0.0)
    recovery_seconds: float = _f(30.0, "How long a lower level must hold before pressure is lowered", min=0.0)
    act_ahead_seconds: float = _f(
        30.0,
        "Critical at once when the memory limit is projected to be reached within this many seconds "
        "at the current growth rate (0: off)",
        min=0.0,
        max=3600.0,
    )
    history_size: int = _f(3600, "Samples kept in the in-memory history ring", min=10, max=1_000_000)
    self_memory_budget_mb: float = _f(
        32.0, "Largest memory (MiB) memdiag's own bounded stores may take; history_size is checked against it", min=1.0
    )
    service_name: str | None = _f(
        None, "Name of this service: names its history file (None: the program's name from argv)"
    )
    history_persist: bool = _f(True, "Keep history in a SQLite file that survives restarts (false: in memory only)")
    history_db: str | None = _f(
        None, "SQLite history file (None: $XDG_STATE_HOME/memdiag/<service_name>.sqlite, ~/.local/state)"
    )
    history_db_interval: float = _f(10.0, "Seconds of samples aggregated into one stored history row", min=1.0)
    history_retention_days: float = _f(
        7.0, "Days of stored history to keep (rows past a day are 5-minute means)", min=0.01
    )
    history_max_mb: float = _f(64.0, "Largest size (MiB) of the history file; the oldest rows go first", min=1.0)

    # -- cleanup ---------------------------------------------------------------------------
    auto_cleanup_level: str = _f(
        "critical", "Pressure level that triggers auto-cleanup", choices=("warning", "critical")
    )
    cleanup_dry_run: bool = _f(False, "Cleanups only report what they would do")
    cache_shrink_fraction: float = _f(0.5, "Share of a cache's bytes a non-emergency cleanup evicts", ratio=True)
    malloc_trim: bool = _f(True, "Return freed heap to the OS with glibc malloc_trim(0)")

    # -- processes -------------------------------------------------------------------------
    child_limit_mb: float | None = _f(None, "RSS (MiB) above which one child process counts as critical", min=1.0)
    terminate_policy: str = _f(
        "owned", "Which processes cleanup may terminate: owned ones, or none", choices=("owned", "none")
    )
    terminate_grace_seconds: float = _f(5.0, "Seconds between SIGTERM and SIGKILL", min=0.0, max=600.0)
    terminate_owned_on_exit: bool = _f(
        True, "At interpreter exit, end owned child processes still running (TERM, KILL after at most 2 s)"
    )
    subreaper: bool = _f(False, "Become a child subreaper to adopt and reap orphaned grandchildren")
    node_heap_threshold_mb: float = _f(512.0, "Node.js child heapUsed (MiB) that counts as critical", min=1.0)
    node_inspect_interval: float = _f(
        5.0, "Seconds between inspector sessions that read an inspected Node.js process's heap", min=0.5, max=3600.0
    )

    # -- leaks -----------------------------------------------------------------------------
    leak_detection: bool = _f(True, "Look for growth trends and classify suspects")
    leak_min_growth_kb_per_min: float = _f(128.0, "Growth below this rate (KiB/min) is never a leak", min=0.0)
    leak_window_seconds: float = _f(300.0, "Seconds of history a growth verdict looks at", min=10.0)
    trace_budget: float = _f(0.02, "Largest share of wall time allocation tracing may run", min=0.0, max=1.0)
    trace_window_seconds: float = _f(5.0, "Length of one allocation-tracing window", min=1.0, max=3600.0)
    trace_frames: int = _f(1, "Frames kept per traced allocation (cost grows with it)", min=1, max=64)
    leak_webhook_url: str | None = _f(None, "URL that receives leak alerts as JSON POSTs (None: off)")
    heap_profile: str = _f(
        "auto",
        "Live-heap profile for leak verdicts: auto (when the sampled profiler is available), "
        "on (falls back to tracemalloc: costly), off",
        choices=("auto", "on", "off"),
    )
    heap_sample_interval_kb: int = _f(
        512, "Mean KiB allocated between two samples of the sampled heap profiler", min=1, max=1_048_576
    )
    heap_snapshot_seconds: float = _f(
        5.0, "Seconds between live-heap snapshots and resource counts by site", min=0.05, max=300.0
    )
    flight_recorder_path: str | None = _f(
        None, "File the latest diagnostics are written to on critical pressure or OOM events (None: off)"
    )

    # -- HTTP ------------------------------------------------------------------------------
    http_host: str = _f("127.0.0.1", "Address the standalone API server binds")
    http_port: int = _f(0, "Port of the standalone API server (0: any free port)", min=0, max=65535)
    api_token: str | None = _f(None, "Bearer token for acting endpoints (None: generate one)")

    def __post_init__(self) -> None:
        errors = _validate_all({f.name: getattr(self, f.name) for f in fields(self)})
        if errors:
            raise ConfigError(errors)

    # ------------------------------------------------------------------------------------
    def updated(self, changes: Mapping[str, Any] | None = None, /, **kwargs: Any) -> MemoryConfig:
        """Return a copy with ``changes`` applied, validated as a whole.

        Values may be strings (from a CLI or environment): they are converted to the
        field's type. Raises :class:`ConfigError` naming every invalid or unknown field;
        ``self`` is never modified.
        """
        merged = {**(dict(changes) if changes else {}), **kwargs}
        errors: dict[str, str] = {}
        converted: dict[str, Any] = {}
        for name, raw in merged.items():
            if name not in FIELD_INFO:
                errors[name] = "unknown field"
                continue
            try:
                converted[name] = _coerce(name, raw)
            except ValueError as exc:
                errors[name] = str(exc)
        values = {**self.to_dict(redact=False), **converted}
        errors.update(_validate_all(values))
        if errors:
            raise ConfigError(errors)
        return replace(self, **converted)

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """The settings as a plain dict; secrets are replaced by ``"***"`` unless ``redact=False``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if redact:
            for name in SECRET_FIELDS:
                if out.get(name):
                    out[name] = "***"
        return out

    def diff(self, other: MemoryConfig) -> dict[str, tuple[Any, Any]]:
        """``{field: (self_value, other_value)}`` for the fields that differ."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }

    @property
    def memory_threshold_bytes(self) -> int:
        return int(self.memory_threshold_mb * MIB)

    @property
    def subprocess_threshold_bytes(self) -> int:
        return int(self.subprocess_threshold_mb * MIB)

    @property
    def child_limit_bytes(self) -> int | None:
        """``child_limit_mb`` in bytes (``None``: no limit for one child)."""
        return None if self.child_limit_mb is None else int(self.child_limit_mb * MIB)


@record
class FieldInfo:
    """What is known about one config field: its type, default, rules and help."""

    name: str
    type: type
    nullable: bool
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    ratio: bool = False

    @property
    def bounds(self) -> tuple[float, float]:
        """``(lowest, highest)`` value a number field accepts: its min and max, 0-1 for a
        ratio, and never beyond :data:`NUMBER_LIMIT` in magnitude. The validator checks
        exactly these, and the API's OpenAPI document publishes them."""
        lo, hi = (0.0, 1.0) if self.ratio else (-NUMBER_LIMIT, NUMBER_LIMIT)
        if self.min is not None:
            lo = max(lo, self.min)
        if self.max is not None:
            hi = min(hi, self.max)
        return lo, hi


def _field_infos() -> dict[str, FieldInfo]:
    infos = {}
    hints = {"bool": bool, "float": float, "int": int, "str": str}
    for f in fields(MemoryConfig):
        annotation = str(f.type)
        nullable = "None" in annotation
        base = annotation.split("|")[0].strip()
        md = f.metadata
        infos[f.name] = FieldInfo(
            name=f.name,
            type=hints[base],
            nullable=nullable,
            default=f.default,
            help=md.get("help", ""),
            min=md.get("min"),
            max=md.get("max"),
            choices=md.get("choices"),
            ratio=md.get("ratio", False),
        )
    return infos


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, raw: Any) -> Any:
    """Convert ``raw`` (possibly a string from env/CLI) to field ``name``'s type."""
    info = FIELD_INFO[name]
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in {"none", "null"} and info.nullable):
        if info.nullable:
            return None
        raise ValueError("must not be empty")
    if info.type is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ValueError(f"must be a boolean (true/false), got {raw!r}")
    if info.type in (int, float):
        if isinstance(raw, bool):
            raise ValueError(f"must be a number, got {raw!r}")
        if isinstance(raw, str):
            try:
                raw = float(raw.strip()) if info.type is float else int(raw.strip(), 10)
            except ValueError:
                raise ValueError(
                    f"must be {'a number' if info.type is float else 'a whole number'}, got {raw!r}"
                ) from None
        if info.type is int:
            if isinstance(raw, float) and raw.is_integer():
                raw = int(raw)
            if not isinstance(raw, int):
                raise ValueError(f"must be a whole number, got {raw!r}")
            return raw
        if not isinstance(raw, (int, float)):
            raise ValueError(f"must be a number, got {type(raw).__name__}")
        if isinstance(raw, int) and abs(raw) > NUMBER_LIMIT:  # float() may overflow
            raise ValueError(
                f"must be at most {NUMBER_LIMIT:g} in magnitude, got an integer of {len(str(abs(raw)))} digits"
            )
        return float(raw)
    if not isinstance(raw, str):
        raise ValueError(f"must be a string, got {type(raw).__name__}")
    return raw


#: The magnitude no number field may exceed (fields may set a smaller ``max``).
NUMBER_LIMIT = 1e15
# What one sample costs in the history ring: 21 float64 columns (memdiag.history.COLUMNS;
# tests/test_minor_defects.py checks this against a real ring with tracemalloc).
HISTORY_BYTES_PER_SAMPLE = 21 * 8


def history_ring_bytes(history_size: int) -> int:
    """The bytes a history ring of ``history_size`` samples takes."""
    return int(history_size) * HISTORY_BYTES_PER_SAMPLE


def _budget_error(values: Mapping[str, Any]) -> str | None:
    """Why ``history_size`` does not fit ``self_memory_budget_mb``, saying what it costs."""
    size = values.get("history_size", 3600)
    budget_mb = values.get("self_memory_budget_mb", 32.0)
    cost = history_ring_bytes(size)
    if cost <= budget_mb * MIB:
        return None
    fits = int(budget_mb * MIB // HISTORY_BYTES_PER_SAMPLE)
    return (
        f"{size} samples would take {cost / MIB:.1f} MiB ({HISTORY_BYTES_PER_SAMPLE} bytes each), over "
        f"self_memory_budget_mb={budget_mb:g}; use at most {fits} samples or raise self_memory_budget_mb"
    )


def _validate_one(info: FieldInfo, value: Any) -> str | None:
    if value is None:
        return None if info.nullable else "must not be empty"
    if info.type is bool:
        return None if isinstance(value, bool) else f"must be a boolean, got {type(value).__name__}"
    if info.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__}"
        if info.type is int and not isinstance(value, int):
            return "must be a whole number"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if abs(value) > NUMBER_LIMIT:
            # Beyond any real size or time; MB fields become bytes and would overflow.
            shown = f"{value:.3g}" if isinstance(value, float) else f"an integer of {len(str(abs(value)))} digits"
            return f"must be at most {NUMBER_LIMIT:g} in magnitude, got {shown}"
        lo, hi = info.bounds
        if info.ratio and not lo <= value <= hi:
            return f"must be a ratio between {lo:g} and {hi:g}, got {value}"
        if value < lo:
            return f"must be >= {lo:g}, got {value}"
        if value > hi:
            return f"must be <= {hi:g}, got {value}"
        return None
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if info.choices and value not in info.choices:
        return f"must be one of {', '.join(info.choices)}; got {value!r}"
    return None


def _validate_all(values: Mapping[str, Any]) -> dict[str, str]:
    errors = {}
    for name, value in values.items():
        info = FIELD_INFO.get(name)
        if info is None:
            continue
        problem = _validate_one(info, value)
        if problem:
            errors[name] = problem
    # Relations between fields.
    if not errors:
        if values.get("profile_interval", 60.0) < values.get("sample_interval", 1.0):
            errors["profile_interval"] = "must be >= sample_interval"
        host = values.get("http_host", "127.0.0.1")
        if isinstance(host, str) and not host.strip():
            errors["http_host"] = "must not be empty"
        token = values.get("api_token")
        if isinstance(token, str) and len(token) < 16:
            errors["api_token"] = "must be at least 16 characters"
        budget = _budget_error(values)
        if budget:
            errors["history_size"] = budget
        url = values.get("leak_webhook_url")
        if isinstance(url, str) and not url.startswith(("http://", "https://")):
            errors["leak_webhook_url"] = "must be an http:// or https:// URL"
    return errors


FIELD_INFO: dict[str, FieldInfo] = _field_infos()


# -- layers ------------------------------------------------------------------------------


def default_config_path() -> Path:
    """``$MEMDIAG_CONFIG``, else ``$XDG_CONFIG_HOME/memdiag/config.toml`` (``~/.config``)."""
    from pathlib import Path

    return Path(_config_file(None))


def _config_file(path: str | os.PathLike[str] | None) -> str:
    """The file :func:`load_config` reads, as a string (the command line's outside views
    load the configuration without importing ``pathlib``)."""
    if path is None:
        path = os.environ.get(ENV_PREFIX + "CONFIG") or os.path.join(
            os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config"),
            "memdiag",
            "config.toml",
        )
    return os.path.expanduser(os.fspath(path))


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``[memdiag]`` table (or the top level) of a TOML file; ``{}`` if it is missing.

    Raises:
        ConfigError: ``config_file`` says why: unreadable, not UTF-8 text (with the offset
            of the first bad byte), or not valid TOML.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return {}  # the usual case: no file, and no TOML parser loaded (about 450 KiB)
    except OSError as exc:
        raise ConfigError({"config_file": f"cannot read {path}: {exc.strerror or exc}"}) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            {
                "config_file": f"cannot read {path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                f"{exc.start}); a TOML config file must be UTF-8"
            }
        ) from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError is a ValueError
        raise ConfigError({"config_file": f"cannot read {path}: not valid TOML: {exc}"}) from None
    table = data.get("memdiag", data)
    if not isinstance(table, dict):
        raise ConfigError({"config_file": f"{path}: [memdiag] must be a table"})
    return dict(table)


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out = {}
    for name in FIELD_INFO:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            out[name] = raw
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> MemoryConfig:
    """Build the configuration from defaults < file < environment < ``overrides``.

    Args:
        path: a TOML file; ``None`` uses :func:`default_config_path` (a missing file is
            fine). Keys may sit at the top level or in a ``[memdiag]`` table.
        environ: the environment to read ``MEMDIAG_*`` from (default ``os.environ``).
        overrides: values given in code, e.g. ``memdiag.start(memory_threshold_mb=800)``.

    Raises:
        ConfigError: naming the layer and field of every bad value.
    """
    cfg = MemoryConfig()
    file_path = _config_file(path)
    if path is not None and not os.path.exists(file_path):
        raise ConfigError({"config_file": f"{file_path} does not exist"})
    for layer, values in (
        (file_path, _read_toml(file_path)),
        ("environment", _from_env(os.environ if environ is None else environ)),
        ("arguments", dict(overrides or {})),
    ):
        if not values:
            continue
        try:
            cfg = cfg.updated(values)
        except ConfigError as exc:
            raise ConfigError({f"{k} (from {layer})": v for k, v in exc.errors.items()}) from None
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def save_config(changes: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> Path:
    """Persist ``changes`` into the TOML file, merged with what it holds, atomically.

    Only fields that differ from the defaults are kept, so the file stays short. The file
    is written to a temporary file in the same directory, fsynced, and renamed over the
    old one, with mode 0600 (it may hold the API token). ``None`` values are stored by
    omission (the default of every nullable field is ``None``).

    Raises:
        ConfigError: if the merged values are invalid; the file is then untouched.
    """
    from pathlib import Path

    target = Path(_config_file(path))
    current = _read_toml(target)
    merged = {**current, **dict(changes)}
    cfg = MemoryConfig().updated(merged)  # validates the whole file
    defaults = MemoryConfig()
    keep = {k: v for k, v in cfg.to_dict(redact=False).items() if v != getattr(defaults, k) and v is not None}
    lines = ["# memdiag configuration (written by memdiag; edits are kept)", "[memdiag]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in sorted(keep.items())]
    write_atomic(target, "\n".join(lines) + "\n")
    return target


_active: MemoryConfig | None = None


def active_config() -> MemoryConfig:
    """The configuration in force: the running monitor's, else the defaults."""
    return _active if _active is not None else _DEFAULT


def _set_active(cfg: MemoryConfig | None) -> None:
    global _active
    _active = cfg


_DEFAULT = MemoryConfig()
