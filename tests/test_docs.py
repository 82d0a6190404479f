"""The docs that are generated from code stay current; the README opens as promised."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_doc_is_current() -> None:
    gen = runpy.run_path(str(ROOT / "scripts" / "gen_config_doc.py"), run_name="not_main")
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == gen["render"](), (
        "run: python scripts/gen_config_doc.py"
    )


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert first_block is not None
    lines = [ln for ln in first_block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 2
    assert "demo" in lines[0]
    assert lines[1].strip() == "bash .ci/run"
