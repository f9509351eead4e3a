"""Issue 17, sound caching: compiled code is keyed by every source it is built from.

The key (``compiler.cache.compiler_key``) must change when any file of
``compiler/`` or ``circuitsketch/`` changes (checked on a temporary copy of the
package tree, file by file), and everything Numba caches must live under the
key's directory.  End to end, in fresh processes on a temporary copy: a cold
run compiles, a second run loads everything from the cache (zero cache
misses), and a comment appended to ``compiler/gemm.py`` (which Numba's own
check misses: no cached function is defined in it that the generated code
calls directly) makes the next run compile again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler import cache

ROOT = cache.ROOT
FILES = [p.relative_to(ROOT).as_posix() for p in cache.source_files(ROOT)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A temporary copy of the keyed packages (sources only)."""
    root = tmp_path_factory.mktemp("tree")
    for pkg in cache.PACKAGES:
        shutil.copytree(ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_every_compiler_file_is_keyed():
    names = {f for f in FILES if f.startswith("compiler/")}
    want = {p.relative_to(ROOT).as_posix() for p in (ROOT / "compiler").rglob("*.py")}
    assert names == {w for w in want if "__pycache__" not in w}
    assert {"compiler/gemm.py", "compiler/kernels.py", "compiler/emit.py"} <= names
    assert "circuitsketch/ir.py" in FILES


@pytest.mark.parametrize("name", FILES)
def test_key_changes_with_any_source_file(tree, name):
    before = cache.compiler_key(tree)
    f = tree / name
    text = f.read_bytes()
    try:
        f.write_bytes(text + b"\n# a comment\n")
        changed = cache.compiler_key(tree)
    finally:
        f.write_bytes(text)
    assert changed != before, f"appending a comment to {name} left the key unchanged"
    assert cache.compiler_key(tree) == before


def test_key_covers_the_toolchain(tree, monkeypatch):
    real = cache.toolchain()
    assert set(real) == {"python", "numpy", "numba", "llvmlite", "triple", "cpu", "features"}
    before = cache.compiler_key(tree)
    for field in real:
        monkeypatch.setattr(cache, "toolchain", lambda f=field: {**real, f: real[f] + "x"})
        assert cache.compiler_key(tree) != before, field


def test_everything_numba_caches_lives_under_the_key():
    from numba.core.caching import FunctionCache
    from numba.core.registry import CPUDispatcher

    import circuitsketch as cs
    from compiler import gemm, kernels
    from compiler.function import CompiledCircuit

    where = cache.numba_cache_dir()
    assert where == cache.cache_root() / cache.compiler_key() / "numba"
    c = cs.trace(lambda x: {"y": x * 2.0}, x=cs.Input((2,)))
    f = CompiledCircuit(c, 0)
    assert Path(f.module.__file__).parent == cache.cache_dir()
    np.testing.assert_array_equal(f({"x": np.array([1.0, 2.0])})["y"], [2.0, 4.0])
    cached = [
        v
        for m in (kernels, gemm, f.module)
        for v in vars(m).values()
        if isinstance(v, CPUDispatcher) and isinstance(v._cache, FunctionCache)
    ]
    assert len(cached) > 20
    for d in cached:
        assert Path(d._cache._cache_path).is_relative_to(where), d


PROBE = """\
import json
import numpy as np
import circuitsketch as cs
from compiler import cache, gemm, kernels
from compiler.function import CompiledCircuit
from numba.core.registry import CPUDispatcher

c = cs.trace(lambda x, y: {"z": cs.exp(x @ y)}, x=cs.Input((2, 3)), y=cs.Input((3, 2)))
f = CompiledCircuit(c, 0)
z = f({"x": np.ones((2, 3)), "y": np.full((3, 2), 0.5)})["z"]
assert np.allclose(z, np.exp(1.5))
disp = [v for m in (kernels, gemm, f.module) for v in vars(m).values()
        if isinstance(v, CPUDispatcher)]
print(json.dumps({
    "misses": sum(sum(d.stats.cache_misses.values()) for d in disp),
    "hits": sum(sum(d.stats.cache_hits.values()) for d in disp),
    "module": f.module.__file__,
    "compiler": cache.__file__,
}))
"""


def test_a_compiler_change_recompiles_then_is_warm(tmp_path):
    for pkg in cache.PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "probe.py").write_text(PROBE)
    user_numba = tmp_path / "numba-user"  # a user-set NUMBA_CACHE_DIR is not used
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "CIRCUITSKETCH_CACHE": str(tmp_path / "cache"),
        "NUMBA_CACHE_DIR": str(user_numba),
    }

    def run() -> dict:
        out = subprocess.run(
            [sys.executable, "probe.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    cold = run()
    assert Path(cold["compiler"]).is_relative_to(tmp_path)  # the copy is what runs
    assert cold["misses"] > 0 and cold["hits"] == 0
    warm = run()
    assert warm["misses"] == 0 and warm["hits"] > 0 and warm["module"] == cold["module"]
    with open(tmp_path / "compiler" / "gemm.py", "a") as f:
        f.write("\n# a comment\n")
    changed = run()
    assert changed["misses"] > 0 and changed["hits"] == 0
    # the same generated text, under the new key's directory
    assert Path(changed["module"]).name == Path(cold["module"]).name
    assert Path(changed["module"]).parent != Path(cold["module"]).parent
    again = run()
    assert again["misses"] == 0 and again["hits"] > 0
    assert not user_numba.exists() or not any(user_numba.iterdir())


# ---------------------------------------------------------------- sketch compatibility
PROGRAM = """\
import numpy as np
import circuitsketch as cs


def loss(params, x, t):
    d = (params["theta"] * x).sum() - t
    return d * d


def build():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))
    docs = [{"x": x[i], "t": np.array(x[i].sum())} for i in range(4)]
    return cs.training_program(
        name="lin4", params={"theta": np.zeros(3)}, loss=loss, docs=docs,
        optimizer=cs.SGD(lr=0.1, momentum=0.0), steps=4,
    )
"""
TEST = {"x": np.array([0.5, -1.0, 2.0]), "t": np.array(1.0)}


@pytest.fixture(scope="module")
def user_sketch(tmp_path_factory) -> Path:
    """A degree-1 sketch of a 4-document linear regression (2 directions)."""
    from runtime.precompute import precompute
    from runtime.sources import UserProgramSource as UserProgramSpec

    d = tmp_path_factory.mktemp("user")
    (d / "prog.py").write_text(PROGRAM)
    spec = UserProgramSpec.load(str(d / "prog.py"), "build")
    precompute(d / "sketch", spec, 1, num_directions=2, progress=False)
    return d / "sketch"


def test_a_code_generation_change_keeps_sketches_readable(user_sketch, monkeypatch):
    """Other generated code for the same circuits: the sketch is read, with the same bits."""
    import dataclasses

    import runtime.spec
    from compiler import pipeline
    from runtime.query import coefficients, sketch_program
    from runtime.store import Sketch

    before = coefficients(Sketch.open(user_sketch), [TEST], use_cache=False)
    source = sketch_program(Sketch.open(user_sketch)).source
    i = pipeline.PASS_NAMES.index("emit")
    emit = pipeline.PASSES[i]

    def other_codegen(b):
        emit.run(b)
        b.source += "\n# code generation changed\n"

    passes = list(pipeline.PASSES)
    passes[i] = dataclasses.replace(emit, run=other_codegen)
    monkeypatch.setattr(pipeline, "PASSES", passes)
    monkeypatch.setattr(runtime.spec, "_COMPILED", {})  # rebuild the compiled program
    sk = Sketch.open(user_sketch)
    cp = sketch_program(sk)
    assert cp.source != source and cp.source.endswith("# code generation changed\n")
    after = coefficients(sk, [TEST], use_cache=False)
    assert list(after) == list(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


def test_a_changed_circuit_is_refused_naming_it(user_sketch, tmp_path):
    from runtime.sources import UserProgramSource as UserProgramSpec
    from runtime.spec import fingerprints
    from runtime.store import Sketch, SketchError

    sk = Sketch.open(user_sketch)
    same = UserProgramSpec.load(str(user_sketch.parent / "prog.py"), "build")
    sk.check_compiled(fingerprints(same.program()))
    (tmp_path / "prog.py").write_text(PROGRAM.replace("return d * d", "return 2.0 * d * d"))
    other = UserProgramSpec.load(str(tmp_path / "prog.py"), "build")
    with pytest.raises(SketchError, match=r"step circuit for documents .* differs") as e:
        sk.check_compiled(fingerprints(other.program()))
    assert "output circuit for documents" in str(e.value) and "\n" not in str(e.value)
    assert sk.manifest["info"]["compiler_key"] == cache.compiler_key()  # recorded, unchecked
