"""Look at a circuit: op counts, cost estimates, graph exports and pictures.

A training-step circuit is a few hundred tensor equations; reading its text
form tells little about where the work is.  ``summary`` counts nodes, FLOPs
and bytes by op and by scope, ``to_networkx``/``coarsen`` turn the equation
list into graphs that GraphML/DOT tools can open, and ``write_png`` draws a
layered picture (node by node for small circuits, one box per scope for large
ones).

Cost model (each op's registry ``flops``; per evaluation of the circuit on real
float64 values, no fusion):

* elementwise ops (arithmetic, analytic functions, comparisons): 1 FLOP per
  output element -- transcendental ops are counted as 1 each, although they
  cost tens of instructions in practice;
* ``matmul`` of (b, m, k) @ (b, k, n): ``2 * b * m * k * n`` (b = 1 in 2-D);
* ``sum``: one FLOP per input element; ``shift_max``: one comparison per input
  element (counted as a FLOP);
* data movement ``reshape transpose slice pad concat broadcast gather where
  one_hot scatter_add`` and the sources ``input const``: 0 FLOPs;
* bytes moved: every non-source equation reads all its operands and writes its
  result (8 bytes per float/int element, 1 per bool) -- an upper bound that a
  fusing compiler would beat.

The ``networkx`` and ``matplotlib`` imports are lazy so that importing this
module (and the CLI) stays fast.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from typing import TYPE_CHECKING, Any

from circuitsketch.ir import Circuit, Node, Op, opdef

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "COARSE_THRESHOLD",
    "coarsen",
    "flops",
    "format_summary",
    "scope_group",
    "summary",
    "to_networkx",
    "write_dot",
    "write_graphml",
    "write_png",
]

COARSE_THRESHOLD = 60
"""Circuits with more nodes than this are drawn one box per scope by default."""

_ITEMSIZE = {"float": 8, "int": 8, "bool": 1}
_PALETTE = (
    "#8dd3c7",
    "#ffffb3",
    "#bebada",
    "#fb8072",
    "#80b1d3",
    "#fdb462",
    "#b3de69",
    "#fccde5",
    "#d9d9d9",
    "#bc80bd",
    "#ccebc5",
    "#ffed6f",
)


# ---------------------------------------------------------------- cost model
def flops(c: Circuit, i: int) -> int:
    """FLOPs of equation i under the module's cost model (the op's registry ``flops``)."""
    node = c.nodes[i]
    return opdef(node.op).flops(node, [c.nodes[j].shape for j in node.inputs])


def _bytes(c: Circuit, node: Node) -> int:
    if node.op in (Op.INPUT, Op.CONST):
        return 0
    read = sum(c.nodes[j].size * _ITEMSIZE[c.nodes[j].dtype] for j in node.inputs)
    return read + node.size * _ITEMSIZE[node.dtype]


def scope_group(c: Circuit, i: int, levels: int = 1) -> str:
    """The scope of node i cut to its first `levels` components.

    Nodes outside any scope are ``"inputs"`` (input nodes) or ``"(top)"``.
    """
    scope = c.scopes[i] if i < len(c.scopes) else ""
    if not scope:
        return "inputs" if c.nodes[i].op is Op.INPUT else "(top)"
    return "/".join(scope.split("/")[: max(1, levels)])


def summary(c: Circuit) -> dict[str, Any]:
    """Size and cost of a circuit as a JSON-serialisable dict.

    Keys: ``nodes``, ``ops`` (op -> count, most frequent first), ``inputs``,
    ``outputs``, ``depth``, ``flops``, ``flops_by_op``, ``bytes_moved``,
    ``scopes`` (top-level scope -> node count) and ``flops_by_scope``.
    """
    flops_by_op: Counter[str] = Counter()
    flops_by_scope: Counter[str] = Counter()
    scopes: Counter[str] = Counter()
    moved = 0
    for i, node in c:
        f = flops(c, i)
        group = scope_group(c, i)
        flops_by_op[node.op.value] += f
        flops_by_scope[group] += f
        scopes[group] += 1
        moved += _bytes(c, node)
    ops = c.op_counts()
    return {
        "nodes": len(c),
        "ops": ops,
        "inputs": len(c.inputs),
        "outputs": len(c.outputs),
        "depth": c.depth(),
        "flops": int(sum(flops_by_op.values())),
        "flops_by_op": {op: int(flops_by_op[op]) for op in ops},
        "bytes_moved": int(moved),
        "scopes": dict(scopes.most_common()),
        "flops_by_scope": {s: int(flops_by_scope[s]) for s in scopes},
    }


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"


def format_summary(s: dict[str, Any]) -> str:
    """A plain-text table (op, count, FLOPs) followed by the totals and scopes."""
    ops: dict[str, int] = s["ops"]
    fl: dict[str, int] = s.get("flops_by_op", {})
    width = max([len("op"), *map(len, ops)])
    lines = [f"{'op':<{width}}  {'count':>6}  {'flops':>10}", "-" * (width + 20)]
    lines += [f"{op:<{width}}  {n:>6}  {fl.get(op, 0):>10}" for op, n in ops.items()]
    lines.append("-" * (width + 20))
    lines.append(f"{'total':<{width}}  {s['nodes']:>6}  {s.get('flops', 0):>10}")
    lines.append("")
    lines.append(f"inputs {s['inputs']}, outputs {s['outputs']}, depth {s['depth']}")
    if "flops" in s:
        lines.append(f"flops per evaluation {s['flops']} ({_si(s['flops'])})")
    if "bytes_moved" in s:
        lines.append(f"bytes moved (unfused) {s['bytes_moved']} ({_si(s['bytes_moved'])}B)")
    if s.get("scopes"):
        lines.append("")
        sw = max([len("scope"), *map(len, s["scopes"])])
        sf = s.get("flops_by_scope", {})
        lines.append(f"{'scope':<{sw}}  {'nodes':>6}  {'flops':>10}")
        lines += [f"{k:<{sw}}  {n:>6}  {sf.get(k, 0):>10}" for k, n in s["scopes"].items()]
    return "\n".join(lines)


# ---------------------------------------------------------------- graphs
def _label(c: Circuit, i: int) -> str:
    node = c.nodes[i]
    if node.op is Op.INPUT:
        return str(node.attrs[0])
    if node.op is Op.CONST and node.size == 1 and node.dtype == "float":
        return f"{float(c.consts[i].reshape(-1)[0]):.3g}"
    if node.op is Op.POW:
        return f"pow {node.attrs[0]:g}"
    return node.op.value


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape) if shape else "scalar"


def to_networkx(c: Circuit, levels: int = 2) -> nx.DiGraph:
    """One graph node per equation (id = node index), edges operand -> user.

    Node attributes: ``op``, ``shape`` (e.g. "8x16" or "scalar"), ``dtype``,
    ``size``, ``scope`` (full scope path), ``group`` (scope cut to `levels`
    components), ``label``, ``flops``, ``name`` (input name or ""),
    ``outputs`` (comma-separated output names or ""). Edge attributes:
    ``operand`` (first operand position), ``operands`` (all positions, e.g.
    "0,1" for x*x) and ``multiplicity``.  Graph attributes ``inputs`` and
    ``outputs`` are JSON strings name -> node id.  Everything is a str or int so
    the graph can be written as GraphML unchanged.
    """
    import networkx as nx

    out_names: dict[int, list[str]] = {}
    for name, nid in c.outputs.items():
        out_names.setdefault(nid, []).append(name)
    G = nx.DiGraph(
        name="circuit",
        kind="equations",
        inputs=json.dumps(c.inputs),
        outputs=json.dumps(c.outputs),
    )
    for i, node in c:
        G.add_node(
            i,
            op=node.op.value,
            shape=_shape_text(node.shape),
            dtype=node.dtype,
            size=int(node.size),
            scope=c.scopes[i] if i < len(c.scopes) else "",
            group=scope_group(c, i, levels),
            label=_label(c, i),
            flops=int(flops(c, i)),
            name=str(node.attrs[0]) if node.op is Op.INPUT else "",
            outputs=",".join(out_names.get(i, [])),
        )
    for i, node in c:
        positions: dict[int, list[int]] = {}
        for pos, j in enumerate(node.inputs):
            positions.setdefault(j, []).append(pos)
        for j, pos in positions.items():
            G.add_edge(
                j, i, operand=pos[0], operands=",".join(map(str, pos)), multiplicity=len(pos)
            )
    return G


def coarsen(c: Circuit, levels: int = 2) -> nx.DiGraph:
    """One graph node per scope group (scope cut to `levels` components).

    Node attributes: ``weight`` (number of equations), ``flops``, ``size``
    (scalar elements produced), ``internal_edges``, ``first`` (smallest node
    index, i.e. order of appearance) and ``label``.  Edge attribute ``weight``
    counts operand -> user pairs between two groups.  The result may have
    cycles (e.g. model -> model/attention -> model for a residual connection).
    Graph attribute ``kind`` is "coarse".
    """
    import networkx as nx

    G = nx.DiGraph(
        name="circuit (coarse)",
        kind="coarse",
        inputs=json.dumps(c.inputs),
        outputs=json.dumps(c.outputs),
    )
    group = [scope_group(c, i, levels) for i in range(len(c))]
    for i, node in c:
        g = group[i]
        if g not in G:
            G.add_node(g, weight=0, flops=0, size=0, internal_edges=0, first=i, label=g)
        attrs = G.nodes[g]
        attrs["weight"] += 1
        attrs["flops"] += int(flops(c, i))
        attrs["size"] += int(node.size)
    for i, node in c:
        for j in set(node.inputs):
            a, b = group[j], group[i]
            if a == b:
                G.nodes[a]["internal_edges"] += 1
            elif G.has_edge(a, b):
                G.edges[a, b]["weight"] += 1
            else:
                G.add_edge(a, b, weight=1)
    for g, attrs in G.nodes(data=True):
        attrs["label"] = f"{g}\n{attrs['weight']} nodes"
    return G


def _graph(c: Circuit, coarse: bool) -> nx.DiGraph:
    return coarsen(c) if coarse else to_networkx(c)


def write_graphml(c: Circuit, path: str | os.PathLike[str], coarse: bool = False) -> None:
    """Write the equation graph (or the coarse scope graph) as GraphML."""
    import networkx as nx

    nx.write_graphml(_graph(c, coarse), os.fspath(path))


def _dot_quote(s: object) -> str:
    text = str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _colors(groups: list[str]) -> dict[str, str]:
    order = list(dict.fromkeys(groups))
    return {g: _PALETTE[k % len(_PALETTE)] for k, g in enumerate(order)}


def dot_text(G: nx.DiGraph) -> str:
    """DOT source for a graph made by ``to_networkx`` or ``coarsen``.

    Fine graphs get one cluster per scope group; coarse graphs label edges with
    their weight.  Written by hand because pydot/pygraphviz are not required.
    """
    coarse = G.graph.get("kind") == "coarse"
    ids = {v: f"n{v}" if isinstance(v, int) else f"g{k}" for k, v in enumerate(G.nodes)}
    groups = [d.get("group", v) for v, d in G.nodes(data=True)]
    colors = _colors([str(g) for g in groups])
    lines = [f"digraph {_dot_quote(G.graph.get('name', 'circuit'))} {{"]
    lines.append("  rankdir=TB;")
    lines.append('  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];')
    lines.append('  edge [fontname="Helvetica", fontsize=8, color="#555555"];')
    for key in ("inputs", "outputs"):
        if key in G.graph:
            lines.append(f"  // {key}: {G.graph[key]}")

    def node_line(v: Any, d: dict[str, Any], indent: str) -> str:
        if coarse:
            label = f"{v}\n{d['weight']} nodes, {d['flops']} flops"
            return (
                f"{indent}{ids[v]} [label={_dot_quote(label)}, "
                f"fillcolor={_dot_quote(colors[str(v)])}];"
            )
        label = f"%{v} {d['label']}\n{d['dtype']}[{d['shape']}]"
        if d.get("outputs"):
            label += f"\n-> {d['outputs']}"
        shape = ", shape=ellipse" if d["op"] == "input" else ""
        return (
            f"{indent}{ids[v]} [label={_dot_quote(label)}, "
            f"fillcolor={_dot_quote(colors[str(d['group'])])}{shape}];"
        )

    if coarse:
        lines += [node_line(v, d, "  ") for v, d in G.nodes(data=True)]
    else:
        members: dict[str, list[Any]] = {}
        for v, d in G.nodes(data=True):
            members.setdefault(str(d["group"]), []).append(v)
        for k, (g, vs) in enumerate(members.items()):
            lines.append(f"  subgraph cluster_{k} {{")
            lines.append(f'    label={_dot_quote(g)}; style=dashed; color="#999999";')
            lines += [node_line(v, G.nodes[v], "    ") for v in vs]
            lines.append("  }")
    for u, v, d in G.edges(data=True):
        if coarse:
            w = d["weight"]
            attrs = f"label={_dot_quote(w)}, penwidth={1 + math.log2(w):.2f}"
        else:
            n_in = G.in_degree(v)
            attrs = f"label={_dot_quote(d['operands'])}" if n_in > 1 else ""
        lines.append(f"  {ids[u]} -> {ids[v]}" + (f" [{attrs}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dot(c: Circuit, path: str | os.PathLike[str], coarse: bool = False) -> None:
    """Write Graphviz DOT text of the equation graph (or the coarse scope graph)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(dot_text(_graph(c, coarse)))


# ---------------------------------------------------------------- pictures
def _layers(G: nx.DiGraph) -> dict[Any, int]:
    """Layer of every node of a DAG: its topological generation (= longest path from a source).

    Constants are moved right, next to their first user, so they do not crowd
    the first column.
    """
    import networkx as nx

    layer = {v: k for k, gen in enumerate(nx.topological_generations(G)) for v in gen}
    for v, d in G.nodes(data=True):
        if d.get("op") == "const" and G.out_degree(v):
            layer[v] = max(0, min(layer[u] for u in G.successors(v)) - 1)
    return layer


def write_png(
    c: Circuit, path: str | os.PathLike[str], coarse: bool | None = None, dpi: int = 120
) -> None:
    """Draw the circuit left to right and save it as PNG.

    ``coarse=None`` draws circuits of at most ``COARSE_THRESHOLD`` nodes node by
    node (in topological layers, labelled with op and shape) and larger ones as
    one box per scope group in order of appearance, with arcs weighted by the
    number of operand edges between groups: the only readable view of a few
    hundred equations.
    """
    # A bare Figure on the Agg canvas: no pyplot, so no global backend state and no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if coarse is None:
        coarse = len(c) > COARSE_THRESHOLD
    if coarse:
        G = coarsen(c)
        fig = Figure(figsize=_coarse_size(G))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        _draw_coarse(G, ax)
        title = f"circuit: {len(c)} nodes in {len(G)} scope groups"
    else:
        G = to_networkx(c)
        layers = _layers(G)
        n_layers = max(layers.values(), default=0) + 1
        widest = max(Counter(layers.values()).values(), default=1)
        fig = Figure(figsize=(min(3 + 1.1 * n_layers, 40), min(2.5 + 0.8 * widest, 30)))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        _draw_fine(G, layers, ax)
        title = f"circuit: {len(c)} nodes, depth {c.depth()}"
    ax.set_title(title, fontsize=11)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=dpi, format="png")


def _draw_fine(G: nx.DiGraph, layers: dict[Any, int], ax: Any) -> None:
    import networkx as nx
    from matplotlib.patches import Patch

    if len(G) == 0:
        ax.text(0.5, 0.5, "(empty circuit)", ha="center", va="center")
        return
    nx.set_node_attributes(G, layers, "layer")
    pos = nx.multipartite_layout(G, subset_key="layer", align="vertical")
    colors = _colors([G.nodes[v]["group"] for v in G])
    shapes = {"input": "o", "const": "d"}
    for shape in ("o", "d", "s"):
        vs = [v for v in G if shapes.get(G.nodes[v]["op"], "s") == shape]
        if vs:
            nx.draw_networkx_nodes(
                G,
                pos,
                nodelist=vs,
                ax=ax,
                node_shape=shape,
                node_color=[colors[G.nodes[v]["group"]] for v in vs],
                node_size=900,
                edgecolors="#333333",
            )
    nx.draw_networkx_edges(
        G, pos, ax=ax, node_size=900, arrows=True, arrowsize=10, edge_color="#777777", width=0.8
    )
    labels = {v: f"{G.nodes[v]['label']}\n{G.nodes[v]['shape']}" for v in G}
    nx.draw_networkx_labels(G, pos, ax=ax, labels=labels, font_size=6)
    handles = [Patch(facecolor=col, edgecolor="#333333", label=g) for g, col in colors.items()]
    ax.legend(
        handles=handles, loc="upper left", fontsize=7, frameon=False, bbox_to_anchor=(0.0, 1.0)
    )
    ax.margins(0.08)


_BOX_W, _BOX_H, _UNIT_IN = 0.84, 0.5, 1.7  # coarse boxes (data units) and inches per unit


def _arc_height(span: int) -> float:
    return 0.12 + 0.22 * abs(span)


def _coarse_order(G: nx.DiGraph) -> list[Any]:
    return sorted(G.nodes, key=lambda v: G.nodes[v]["first"])


def _coarse_size(G: nx.DiGraph) -> tuple[float, float]:
    x = {v: k for k, v in enumerate(_coarse_order(G))}
    spans = [x[b] - x[a] for a, b in G.edges]
    down = max([_arc_height(s) for s in spans if s > 0], default=0.0)
    up = max([_arc_height(s) for s in spans if s < 0], default=0.0)
    width = max(len(G), 1) * _UNIT_IN + 0.6
    height = (down + up + _BOX_H + 0.5) * _UNIT_IN + 0.5
    return min(width, 60.0), min(height, 40.0)


def _draw_coarse(G: nx.DiGraph, ax: Any) -> None:
    """Arc diagram: groups left to right by first node; forward arcs below, back arcs above."""
    import numpy as np
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    order = _coarse_order(G)
    if not order:
        ax.text(0.5, 0.5, "(empty circuit)", ha="center", va="center")
        return
    x = {v: float(k) for k, v in enumerate(order)}
    colors = _colors(order)
    emax = max([d["weight"] for _, _, d in G.edges(data=True)], default=1)
    lo, hi = -_BOX_H / 2, _BOX_H / 2
    t = np.linspace(0.0, np.pi, 60)
    for a, b, d in G.edges(data=True):
        span = x[b] - x[a]
        sign = -1.0 if span > 0 else 1.0  # forward below, backward above
        h = _arc_height(int(span))
        base = sign * _BOX_H / 2
        # leave/enter a box off-centre so arcs in and out of one box do not overlap
        x0, x1 = x[a] + 0.12 * np.sign(span), x[b] - 0.12 * np.sign(span)
        xs = x0 + (x1 - x0) * (1 - np.cos(t)) / 2
        ys = base + sign * h * np.sin(t)
        lw = 0.8 + 3.2 * math.sqrt(d["weight"] / emax)
        ax.plot(xs[:-4], ys[:-4], color="#666666", lw=lw, solid_capstyle="round", zorder=1)
        ax.add_patch(
            FancyArrowPatch(
                (xs[-5], ys[-5]),
                (xs[-1], ys[-1]),
                arrowstyle="-|>",
                mutation_scale=10 + 3 * lw,
                color="#666666",
                lw=lw,
                zorder=1,
            )
        )
        ax.text(
            xs[30],
            ys[30],
            str(d["weight"]),
            ha="center",
            va="center",
            fontsize=7,
            zorder=3,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"},
        )
        lo, hi = min(lo, float(ys.min())), max(hi, float(ys.max()))
    for v in order:
        n = G.nodes[v]
        ax.add_patch(
            FancyBboxPatch(
                (x[v] - _BOX_W / 2, -_BOX_H / 2),
                _BOX_W,
                _BOX_H,
                boxstyle="round,pad=0.02",
                fc=colors[v],
                ec="#333333",
                zorder=2,
            )
        )
        ax.text(
            x[v],
            0.0,
            f"{v}\n{n['weight']} nodes\n{_si(n['flops'])} flops",
            ha="center",
            va="center",
            fontsize=7.5,
            zorder=3,
        )
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylim(lo - 0.15, hi + 0.15)
    ax.set_aspect("equal")
