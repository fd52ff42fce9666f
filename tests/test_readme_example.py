"""The README's embedding example runs as copied, and prints what the README says it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> tuple[str, list[str]]:
    """The first ```python block after "## Embedding", and the output shown for it."""
    text = README.read_text()
    section = text[text.index("## Embedding") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    output = re.search(r"```\n\$ python demo\.py\n(.*?)```", section, re.DOTALL)
    assert code and output, "the README lost its embedding example or its output"
    return code.group(1), output.group(1).splitlines()


def test_the_embedding_example_runs_as_written(short_tmp: Path) -> None:
    """Saved as demo.py and run with ``python demo.py``: nothing added, no fixed path."""
    code, expected = readme_example()
    assert "/tmp/" not in code  # two copies run at once must not collide
    (short_tmp / "demo.py").write_text(code)
    result = subprocess.run(
        [sys.executable, "demo.py"],
        cwd=short_tmp,
        env={**os.environ, "TMPDIR": str(short_tmp)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines() == expected
    assert list(short_tmp.iterdir()) == [short_tmp / "demo.py"]  # its socket directory is gone
