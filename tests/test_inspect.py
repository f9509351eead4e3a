"""Tests of circuitsketch.inspect (summaries, graph exports, pictures) and the inspect CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import networkx as nx
import numpy as np
import pytest

import circuitsketch as cs
from circuitsketch import inspect as insp
from circuitsketch.ir import Op
from circuitsketch.models import microgpt
from runtime.cli import main
from runtime.cli.inspect import parse_inputs, parse_shape

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def step_circuit() -> cs.Circuit:
    docs = microgpt.read_docs(microgpt.corpus_path())[:20]
    return microgpt.build(docs).step_circuits[8]


@pytest.fixture(scope="module")
def small_circuit() -> cs.Circuit:
    def f(x, w, b):
        h = cs.matmul(x, w) + b
        e = cs.exp(h - 1.0)
        return {"p": e / e.sum(axis=-1, keepdims=True), "loss": (h * h).mean()}

    return cs.trace(f, x=cs.Input((3, 4)), w=cs.Input((4, 5)), b=cs.Input((5,)))


def _fine_edges(c: cs.Circuit) -> int:
    return sum(len(set(node.inputs)) for node in c.nodes)


# ---------------------------------------------------------------- summary
def test_summary_of_microgpt_step_is_consistent(step_circuit):
    s = insp.summary(step_circuit)
    json.dumps(s)  # JSON-serialisable as is
    assert s["nodes"] == len(step_circuit)
    assert sum(s["ops"].values()) == s["nodes"]
    assert s["ops"] == step_circuit.op_counts()
    assert sum(s["scopes"].values()) == s["nodes"]
    assert {"inputs", "model", "backward", "adam"} <= set(s["scopes"])
    assert s["inputs"] == len(step_circuit.inputs) and s["outputs"] == len(step_circuit.outputs)
    assert s["depth"] == step_circuit.depth()
    assert s["flops"] == sum(s["flops_by_op"].values()) == sum(s["flops_by_scope"].values())
    assert set(s["flops_by_op"]) == set(s["ops"])
    for op in ("reshape", "transpose", "broadcast", "where", "input", "const", "gather"):
        assert s["flops_by_op"][op] == 0
    assert s["flops_by_op"]["matmul"] > 0 and s["bytes_moved"] > 0
    text = insp.format_summary(s)
    for op, n in s["ops"].items():
        assert re.search(rf"^{op}\s+{n}\s", text, re.M), op
    assert re.search(rf"^total\s+{s['nodes']}\s+{s['flops']}$", text, re.M)


@pytest.mark.parametrize(("a", "b"), [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 6))])
def test_matmul_flops(a, b):
    c = cs.trace(lambda x, y: cs.matmul(x, y), x=cs.Input(a), y=cs.Input(b))
    s = insp.summary(c)
    batch = a[0] if len(a) == 3 else 1
    m, k, n = a[-2], a[-1], b[-1]
    assert s["flops"] == s["flops_by_op"]["matmul"] == 2 * batch * m * k * n


def test_elementwise_and_sum_flops():
    c = cs.trace(
        lambda x, y: (cs.exp(x) * y + x**0.5).sum(axis=0), x=cs.Input((3, 4)), y=cs.Input((3, 4))
    )
    s = insp.summary(c)
    assert s["flops_by_op"] == {
        **{op: 0 for op in s["ops"]},
        "exp": 12,
        "mul": 12,
        "pow": 12,
        "add": 12,
        "sum": 12,
    }
    assert s["flops"] == 60


# ---------------------------------------------------------------- graphs
def test_to_networkx_attributes_and_operands():
    c = cs.trace(lambda x, y: (x - y) * (x - y) / y, x=cs.Input((2,)), y=cs.Input((2,)))
    G = insp.to_networkx(c)
    assert G.number_of_nodes() == len(c) and G.number_of_edges() == _fine_edges(c)
    sub = next(i for i, n in c if n.op is Op.SUB)
    assert G.edges[c.inputs["x"], sub]["operand"] == 0
    assert G.edges[c.inputs["y"], sub]["operand"] == 1
    sq = next(i for i, n in c if n.op is Op.MUL)  # (x - y) * (x - y): one edge, used twice
    assert G.edges[sub, sq]["operands"] == "0,1" and G.edges[sub, sq]["multiplicity"] == 2
    assert G.nodes[c.inputs["x"]]["label"] == "x" and G.nodes[sub]["shape"] == "2"
    assert G.nodes[c.outputs["out"]]["outputs"] == "out"
    assert json.loads(G.graph["inputs"]) == c.inputs


def test_graphml_round_trip(tmp_path, step_circuit, small_circuit):
    for c in (small_circuit, step_circuit):
        path = tmp_path / "c.graphml"
        insp.write_graphml(c, path)
        G = nx.read_graphml(path)
        assert G.number_of_nodes() == len(c)
        assert G.number_of_edges() == _fine_edges(c) == insp.to_networkx(c).number_of_edges()
        assert {d["op"] for _, d in G.nodes(data=True)} == set(c.op_counts())
    insp.write_graphml(step_circuit, tmp_path / "coarse.graphml", coarse=True)
    Gc = nx.read_graphml(tmp_path / "coarse.graphml")
    assert Gc.number_of_nodes() == insp.coarsen(step_circuit).number_of_nodes()


def test_coarsen_groups_by_scope(step_circuit):
    G = insp.coarsen(step_circuit)
    assert {"inputs", "model/attention", "model/mlp", "model/loss", "backward/grad", "adam"} <= set(
        G.nodes
    )
    assert sum(d["weight"] for _, d in G.nodes(data=True)) == len(step_circuit)
    between = sum(d["weight"] for _, _, d in G.edges(data=True))
    inside = sum(d["internal_edges"] for _, d in G.nodes(data=True))
    assert between + inside == _fine_edges(step_circuit)
    assert G.edges["backward/grad", "adam"]["weight"] > 0
    assert not G.has_edge("adam", "model/attention")
    top = insp.coarsen(step_circuit, levels=1)
    assert set(top.nodes) == set(insp.summary(step_circuit)["scopes"])


def test_dot_contains_every_node(tmp_path, step_circuit, small_circuit):
    for c in (small_circuit, step_circuit):
        path = tmp_path / "c.dot"
        insp.write_dot(c, path)
        text = path.read_text()
        assert text.startswith("digraph") and text.rstrip().endswith("}")
        assert text.count("{") == text.count("}")
        defined = set(re.findall(r"^\s*n(\d+) \[label=", text, re.M))
        assert defined == {str(i) for i in range(len(c))}
        assert len(re.findall(r"^\s*n\d+ -> n\d+", text, re.M)) == _fine_edges(c)
    insp.write_dot(step_circuit, tmp_path / "coarse.dot", coarse=True)
    coarse = (tmp_path / "coarse.dot").read_text()
    groups = insp.coarsen(step_circuit).nodes
    for g in groups:
        assert f'[label="{g}\\n{groups[g]["weight"]} nodes' in coarse, g


def _check_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0  # not a blank canvas
    return img


def test_png_small_and_coarse(tmp_path, step_circuit, small_circuit):
    insp.write_png(small_circuit, tmp_path / "small.png")
    _check_png(tmp_path / "small.png")
    insp.write_png(step_circuit, tmp_path / "coarse.png")  # auto: coarse above 60 nodes
    _check_png(tmp_path / "coarse.png")
    insp.write_png(small_circuit, tmp_path / "forced.png", coarse=True)
    _check_png(tmp_path / "forced.png")


# ---------------------------------------------------------------- CLI
def test_cli_inspect_prints_op_table(capsys, step_circuit):
    assert main(["inspect"]) == 0
    out = capsys.readouterr().out
    assert "microgpt step circuit, length bucket 8" in out
    assert re.search(r"^matmul\s+\d+\s+\d+$", out, re.M)
    assert re.search(rf"^total\s+{len(step_circuit)}\s", out, re.M)


def test_cli_inspect_json(capsys, step_circuit):
    assert main(["inspect", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nodes"] == len(step_circuit)
    assert data["ops"] == step_circuit.op_counts()
    assert main(["inspect", "--json", "--circuit", "output", "--length", "16"]) == 0
    assert json.loads(capsys.readouterr().out)["nodes"] > 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["inspect", "--length", "7"], "length buckets 8, 16"),
        (["inspect", "--length", "abc"], "positive integer"),
        (["inspect", "--length", "-3"], "positive integer"),
        (["inspect", "--circuit", "nope"], "invalid choice"),
        (["inspect", "--docs", "/no/such/file.txt"], "does not exist"),
        (["inspect", "--no-such-option"], "unrecognized"),
        (["inspect", "--function", "nocolon"], "MODULE:FUNCTION"),
        (["inspect", "--function", "x.py:f", "--length", "8"], "cannot be combined"),
        (["inspect", "--input", "x=3"], "only applies to --function"),
        ([], "no command"),
    ],
)
def test_cli_errors_are_one_line(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and needle in err[-1]
    assert not any("Traceback" in line for line in err)


def test_cli_docs_file(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("ab\ncd\n\n")
    assert main(["inspect", "--docs", str(short), "--json"]) == 0
    assert "2 docs" in json.loads(capsys.readouterr().out)["source"]
    assert main(["inspect", "--docs", str(short), "--length", "16"]) == 2
    assert "no training document" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_text("ok\nNOT-LOWER\n")
    assert main(["inspect", "--docs", str(bad)]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err


def test_cli_docs_file_is_read_as_compile_reads_it(tmp_path, capsys):
    """inspect skipped a blank line that compile refuses (and named an unknown character
    without its line): both read --docs with one reader, so they give one message."""
    from tests.cli_helpers import one_line_error, run

    compile_argv = ["compile", "--degree", 1, "--directions", 1, "--out", tmp_path / "o"]
    blank = tmp_path / "blank.txt"
    blank.write_text("ava\n\nemma\nleo\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("ok\nNOT-LOWER\n")
    for f, needle in ((blank, "line 2: blank line"), (bad, "line 2, document 1: document")):
        err = one_line_error(capsys, "inspect", "--docs", f)
        assert err == one_line_error(capsys, *compile_argv, "--docs", f), err
        assert err.startswith(f"error: documents file '{f}', {needle}"), err
    assert not (tmp_path / "o").exists()
    rc, out, err = run(capsys, "inspect", "--docs", blank, "--skip-blank-lines")
    assert rc == 0 and "3 docs" in out and "skipped 1 blank line(s) (line 2)" in err


def test_cli_exports(tmp_path, capsys, step_circuit):
    files = {k: tmp_path / f"c.{k}" for k in ("graphml", "dot", "png")}
    argv = [
        "inspect",
        "--graphml",
        str(files["graphml"]),
        "--dot",
        str(files["dot"]),
        "--png",
        str(files["png"]),
    ]
    assert main(argv) == 0
    assert "wrote PNG" in capsys.readouterr().err
    assert nx.read_graphml(files["graphml"]).number_of_nodes() == len(step_circuit)
    assert files["dot"].stat().st_size > 0
    _check_png(files["png"])
    assert main(["inspect", "--graphml", str(tmp_path / "missing" / "x.graphml")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot write GraphML")


def test_cli_function(tmp_path, capsys):
    src = tmp_path / "userfn.py"
    src.write_text(
        "import circuitsketch as cs\n\n"
        "def f(x, y):\n    return cs.exp(x @ x.T).sum() * y\n\n"
        "def bad(x):\n    return x if x else -x\n"
    )
    png = tmp_path / "f.png"
    argv = [
        "inspect",
        "--function",
        f"{src}:f",
        "--input",
        "x=3x4,y=scalar",
        "--json",
        "--png",
        str(png),
    ]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flops_by_op"]["matmul"] == 2 * 3 * 4 * 3 and data["inputs"] == 2
    _check_png(png)
    assert main(["inspect", "--function", f"{src}:bad", "--input", "x=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tracing") and "control flow" in err and "\n" not in err
    assert main(["inspect", "--function", f"{src}:missing", "--input", "x=3"]) == 2
    assert "no function 'missing'" in capsys.readouterr().err


def test_parse_helpers():
    assert parse_shape("3x4") == (3, 4) and parse_shape("scalar") == () and parse_shape("5") == (5,)
    assert parse_inputs(["x=3x4,y=scalar", "t=8:int"]) == {
        "x": ((3, 4), "float"),
        "y": ((), "float"),
        "t": ((8,), "int"),
    }


def test_python_dash_m():
    proc = subprocess.run(
        [sys.executable, "-m", "circuitsketch", "inspect", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["nodes"] > 0


def test_inspect_generated_prints_kernel_calls(capsys):
    from runtime.cli import main

    assert main(["inspect", "--generated"]) == 0
    out = capsys.readouterr().out
    assert "def circuit(" in out and "# activity:" in out
    assert "p.call(P[" in out and "k.h_matmul, " in out  # called through its table
    assert main(["inspect", "--generated", "--degree", "0"]) == 0
    real = capsys.readouterr().out
    assert "k.matmul, " in real and "k.h_" not in real


# what each compiler pass made of microgpt's step circuit: a line only that pass's product has
AFTER = {
    "trace": "output loss = %",
    "grad": "output adam_m.wte = %",
    "simplify": "output adam_m.wte = %",
    "fuse": "fused loops (0 with higher orders)",
    "series-fuse": "+hi] %",
    "lower": "k.h_set_weight(wh, code, r, B, K, wpsi)",
    "emit": "def part_",
    "compile": "module cs_",
}


@pytest.mark.parametrize("after", list(AFTER))
def test_inspect_after_each_pass(capsys, after):
    from compiler.pipeline import PASS_NAMES

    assert tuple(AFTER) == PASS_NAMES
    assert main(["inspect", "--after", after, "--degree", "3"]) == 0
    out = capsys.readouterr().out
    assert AFTER[after] in out, out[-500:]
    if after == "trace":  # the forward pass only: no optimizer state is written
        assert "output adam" not in out


def test_inspect_after_simplify_is_smaller_and_lists_passes(capsys):
    main(["inspect", "--after", "grad"])
    grad = capsys.readouterr().out.count("\n")
    main(["inspect", "--after", "simplify"])
    assert capsys.readouterr().out.count("\n") < grad
    assert main(["inspect", "--list-passes"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    from compiler.pipeline import PASS_NAMES

    assert tuple(listed) == PASS_NAMES
