"""`compile` compiles the real-mode code in a second process meanwhile (runtime.real_beside).

Each check runs in a fresh process on an empty cache, so what Numba compiles is
counted from scratch: after the process beside has run, building and running
the real-mode program (and the series steps, when it was given a degree) in the
parent compiles nothing; without it, it compiles.  The two probes of a check run at
the same time: each is its own process tree on a cache of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runtime.real_beside import ENV

ROOT = Path(__file__).resolve().parents[1]

PROBE = """\
import json, sys
from numba.core import event
from runtime import real_beside
from runtime.sources import UserProgramSource
from runtime.spec import build_program, compiled, fingerprints

spec = UserProgramSource.load(sys.argv[1], "build")
circuits = fingerprints(build_program(spec))
started = None
degree = int(sys.argv[3]) or None
if sys.argv[2] == "beside":
    started = real_beside.start(spec, circuits, degree)
    started.join(120)
again = real_beside.start(spec, circuits)  # the hint: not started twice
with event.install_listener("numba:compile", listener := event.RecordingListener()):
    compiled(spec, 0).train()
    if degree:
        from runtime.precompute import load_series_code
        load_series_code(compiled(spec, degree))
print(json.dumps({
    "exitcode": None if started is None else started.exitcode,
    "hint": real_beside.marker(circuits).exists(),
    "started_again": again is not None,
    "compiled": len(listener.buffer),
}))
if again is not None:
    again.join(120)
"""


def _probe(tmp_path: Path, mode: str, degree: int = 0) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "CIRCUITSKETCH_CACHE": str(tmp_path / f"cache-{mode}-{degree}")}
    env.pop(ENV, None)
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "tests" / "poly_program.py"),
                          mode, str(degree)], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _probes(tmp_path: Path, degree: int = 0) -> tuple[dict, dict]:
    """The "beside" probe and the "alone" one, run at once."""
    with ThreadPoolExecutor(2) as pool:
        beside, alone = pool.map(lambda mode: _probe(tmp_path, mode, degree), ("beside", "alone"))
    return beside, alone


def test_the_real_mode_code_is_compiled_beside_and_found_in_the_cache(tmp_path):
    beside, alone = _probes(tmp_path)
    assert beside == {"exitcode": 0, "hint": True, "started_again": False, "compiled": 0}
    # the control: the same build compiles on its own
    assert alone["compiled"] > 0 and alone["started_again"]


def test_given_a_degree_it_compiles_the_series_steps_too(tmp_path):
    beside, alone = _probes(tmp_path, degree=2)
    assert beside == {"exitcode": 0, "hint": True, "started_again": False, "compiled": 0}
    assert alone["compiled"] > 0


def test_real_beside_can_be_turned_off(monkeypatch):
    from runtime import real_beside

    monkeypatch.setenv(ENV, "0")
    assert real_beside.start(object(), {"step:8": "x"}) is None
