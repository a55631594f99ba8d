"""The README's Python example runs as written, on an in-memory store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def example() -> str:
    """The first Python block under the heading "Using the marketplace from Python"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Using the marketplace from Python\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert found is not None, "no ```python block in the README's section"
    return found.group(1)


def test_the_readme_example_registers_publishes_applies_accepts_signs_and_pays(
        tmp_path: Path) -> None:
    code = example()
    assert 'store_url="memory://"' in code
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSSIKON_")}
    ran = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "Paid 1200.00"
    assert list(tmp_path.iterdir()) == [script]  # nothing written beside it
