"""docs/api.md's runnable example runs as written (issue 19: the documented Python API).

Every fenced ``python`` block that follows a ``<!-- runnable -->`` line is
executed, in order, in one namespace, from the repository root (the
example's own asserts check its numbers against each other).  The blocks
must be there: a document that lost its example fails here too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"


def runnable_blocks(text: str) -> list[str]:
    return re.findall(r"<!-- runnable -->\s*```python\n(.*?)```", text, flags=re.S)


def test_the_runnable_blocks_are_found():
    blocks = runnable_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 2
    assert "import runtime.api as rt" in blocks[0] and "rt.program(" in blocks[1]
    assert runnable_blocks("<!-- runnable -->\n```python\nx = 1\n```\n```python\ny\n```") == [
        "x = 1\n"
    ]


def test_the_documented_example_runs(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": "api_doc"}
    for i, block in enumerate(runnable_blocks(DOC.read_text(encoding="utf-8"))):
        try:
            exec(compile(block, f"docs/api.md runnable block {i}", "exec"), namespace)
        except Exception as e:  # name the block in the failure
            pytest.fail(f"docs/api.md runnable block {i} failed: {type(e).__name__}: {e}")
    out = capsys.readouterr().out
    assert "'set': 0" in out  # the printed record
    report = namespace["report"]
    assert set(report["ranking"]) == {"1", "4"}
    assert namespace["auto"].estimator.shape == (3, 1)
