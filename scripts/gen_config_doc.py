"""Write docs/configuration.md from memdiag.config.FIELD_INFO (a test keeps it current).

Run:  python scripts/gen_config_doc.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from memdiag.config import FIELD_INFO  # noqa: E402

HEADER = """# Configuration

Every field, its default and its rule. Layers, lowest first: these defaults < a TOML file
(`$MEMDIAG_CONFIG`, or `$XDG_CONFIG_HOME/memdiag/config.toml`; keys at the top level or in
a `[memdiag]` table) < `MEMDIAG_<FIELD>` environment variables (e.g.
`MEMDIAG_MEMORY_THRESHOLD_MB=800`) < runtime updates (`diag.configure(...)`, `memdiag configure`,
`POST /api/memory/configure`). An update is validated as a whole: one bad field rejects it all,
with every bad field named, and nothing changes. Persisted updates are written atomically (0600).

The first seven are the specification's fields, with its defaults. Sizes are MB (MiB) as in
the specification; reports give bytes.

| field | type | default | rule | meaning |
| --- | --- | --- | --- | --- |
"""

FOOTER = """
Every number must be finite and at most 1e15 in magnitude (sizes in MB become bytes).
Cross-field rules: `profile_interval >= sample_interval`; `api_token` at least 16 characters;
`leak_webhook_url` must be an http(s) URL. `api_token` and `leak_webhook_url` are shown as
`***` in every report.
"""


def render() -> str:
    rows = []
    for name, f in FIELD_INFO.items():
        kind = f.type.__name__ + (" or null" if f.nullable else "")
        rule = []
        if f.ratio:
            rule.append("0..1")
        if f.min is not None:
            rule.append(f">= {f.min:g}")
        if f.max is not None:
            rule.append(f"<= {f.max:g}")
        if f.choices:
            rule.append(" / ".join(f.choices))
        if f.default is None:
            default = "null"
        elif isinstance(f.default, bool):
            default = str(f.default).lower()
        else:
            default = str(f.default)
        rows.append(f"| `{name}` | {kind} | `{default}` | {', '.join(rule)} | {f.help} |")
    return HEADER + "\n".join(rows) + "\n" + FOOTER


if __name__ == "__main__":
    (ROOT / "docs" / "configuration.md").write_text(render(), encoding="utf-8")
