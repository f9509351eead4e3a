"""The house's floors (issue 17): imports point one way, the way data flows.

The IR and tracing (``circuitsketch/``) import nothing of ours above them;
the compiler imports no runtime; the command line (``runtime/cli/``) sits on
top, and reaches programs only through the program-source interface.  Every
import counts, at the top of a module or inside a function, and so does
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "circuitsketch" / "__main__.py"  # `python -m circuitsketch`: the CLI's shim
MAX_LINES = 600


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module name `path` imports, wherever the import stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def offenders(paths: list[Path], *forbidden: str) -> dict[str, list[str]]:
    out = {}
    for p in paths:
        bad = sorted(
            n for n in imported(p) if any(n == f or n.startswith(f + ".") for f in forbidden)
        )
        if bad:
            out[str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)] = bad
    return out


def test_the_finder_sees_imports_inside_functions_and_by_name(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "import importlib\n"
        "def f():\n    from runtime.query import predict\n"
        "def g():\n    return importlib.import_module('compiler.emit')\n"
    )
    assert offenders([f], "runtime", "compiler") == {
        str(f): ["compiler.emit", "runtime.query", "runtime.query.predict"]
    }
    assert offenders([f], "runtime.cli", "compiler.emitter") == {}


def test_the_ir_and_tracing_import_no_compiler_and_no_runtime():
    paths = [p for p in modules("circuitsketch") if p != SHIM]
    assert len(paths) > 10
    assert offenders(paths, "compiler", "runtime") == {}


def test_the_compiler_imports_no_runtime():
    assert offenders(modules("compiler"), "runtime") == {}


def test_only_the_shim_reaches_up_to_the_cli():
    assert imported(SHIM) == {"runtime.cli", "runtime.cli.main"}
    below = [p for p in modules("circuitsketch") + modules("compiler") if p != SHIM]
    below += [p for p in modules("runtime") if "cli" not in p.relative_to(ROOT).parts]
    assert offenders(below, "runtime.cli") == {}


def test_the_cli_knows_programs_only_through_the_source_interface():
    concrete = ("runtime.sources.microgpt", "runtime.sources.user", "runtime.sources.user_file")
    kinds = ("runtime.sources.MicrogptSource", "runtime.sources.UserProgramSource")
    assert offenders(modules("runtime/cli"), *concrete, *kinds, "circuitsketch.models") == {}


@pytest.mark.parametrize(
    "package", ["circuitsketch", "compiler", "runtime", "tests", "bench", "examples"]
)
def test_no_module_is_over_the_line_limit(package):
    long = {
        str(p.relative_to(ROOT)): n
        for p in modules(package)
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
