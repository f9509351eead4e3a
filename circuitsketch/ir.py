"""The circuit IR: a flat, topologically ordered list of tensor-level equations.

A node is ``(op, inputs, attrs)`` with a static shape and dtype; its id is its
position in ``Circuit.nodes`` so every pass is a plain loop over the list.
Building the same expression twice returns the same node (interning), and one
table (``SHAPE_RULES``) defines the result shape and dtype of every op.

Dtypes are ``"float"`` (differentiable values, float64 or complex128 at run
time), ``"int"`` (token ids) and ``"bool"`` (constant masks).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

Shape = tuple[int, ...]


class IRError(ValueError):
    """A circuit is malformed: a shape, dtype or arity does not fit its op."""


class Op(enum.Enum):
    """Every operation a circuit can hold; FAMILY groups them by how series pass through."""

    INPUT = "input"
    CONST = "const"
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    NEG = "neg"
    EXP = "exp"
    LOG = "log"
    POW = "pow"
    ERF = "erf"
    SUM = "sum"
    MATMUL = "matmul"
    GATHER = "gather"
    SCATTER_ADD = "scatter_add"
    RESHAPE = "reshape"
    TRANSPOSE = "transpose"
    SLICE = "slice"
    PAD = "pad"
    CONCAT = "concat"
    BROADCAST = "broadcast"
    WHERE = "where"
    SHIFT_MAX = "shift_max"
    ONE_HOT = "one_hot"


class Family(enum.Enum):
    SOURCE = "source"  # inputs and constants
    LINEAR = "linear"  # acts on every Taylor coefficient independently
    BILINEAR = "bilinear"  # Cauchy product
    ANALYTIC = "analytic"  # needs a recurrence on coefficients
    SHIFT = "shift"  # reads only the real order-0 part; result is a constant
    INDEX = "index"  # integer-valued or integer-driven, never differentiated


FAMILY: dict[Op, Family] = {
    Op.INPUT: Family.SOURCE,
    Op.CONST: Family.SOURCE,
    **{
        op: Family.LINEAR
        for op in (
            Op.ADD,
            Op.SUB,
            Op.NEG,
            Op.SUM,
            Op.GATHER,
            Op.SCATTER_ADD,
            Op.RESHAPE,
            Op.TRANSPOSE,
            Op.SLICE,
            Op.PAD,
            Op.CONCAT,
            Op.BROADCAST,
            Op.WHERE,
        )
    },
    Op.MUL: Family.BILINEAR,
    Op.MATMUL: Family.BILINEAR,
    Op.DIV: Family.ANALYTIC,
    Op.EXP: Family.ANALYTIC,
    Op.LOG: Family.ANALYTIC,
    Op.POW: Family.ANALYTIC,
    Op.ERF: Family.ANALYTIC,
    Op.SHIFT_MAX: Family.SHIFT,
    Op.ONE_HOT: Family.INDEX,
}

ELEMENTWISE_UNARY = (Op.NEG, Op.EXP, Op.LOG, Op.POW, Op.ERF)
ELEMENTWISE_BINARY = (Op.ADD, Op.SUB, Op.MUL, Op.DIV)


@dataclass(frozen=True)
class Node:
    op: Op
    inputs: tuple[int, ...]
    shape: Shape
    dtype: str
    attrs: tuple = ()

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


# ---------------------------------------------------------------- shape rules
def _same(shapes: Sequence[Shape], op: Op) -> Shape:
    if any(s != shapes[0] for s in shapes):
        raise IRError(f"{op.value}: operand shapes differ {list(shapes)}; broadcast explicitly")
    return shapes[0]


def _need(dtypes: Sequence[str], want: Sequence[str], op: Op) -> None:
    for got, w in zip(dtypes, want, strict=True):
        if w != "any" and got != w:
            raise IRError(f"{op.value}: operand dtype {got}, expected {w}")


def _rule_source(op: Op, shapes, dtypes, attrs):
    return tuple(attrs[1]), attrs[2]


def _rule_elementwise(op: Op, shapes, dtypes, attrs):
    _need(dtypes, ["float"] * len(dtypes), op)
    return _same(shapes, op), "float"


def _axis(axis: int, ndim: int, op: Op) -> int:
    if not 0 <= axis < ndim:
        raise IRError(f"{op.value}: axis {axis} out of range for rank {ndim}")
    return axis


def _rule_reduce(op: Op, shapes, dtypes, attrs):
    _need(dtypes, ["float"], op)
    (shape,) = shapes
    ax = _axis(attrs[0], len(shape), op)
    return shape[:ax] + shape[ax + 1 :], "float"


def _rule_matmul(op: Op, shapes, dtypes, attrs):
    _need(dtypes, ["float", "float"], op)
    a, b = shapes
    if len(a) != len(b) or len(a) not in (2, 3) or a[-1] != b[-2] or a[:-2] != b[:-2]:
        raise IRError(f"matmul: incompatible shapes {a} @ {b}")
    return a[:-1] + b[-1:], "float"


def _rule_gather(op: Op, shapes, dtypes, attrs):
    _need(dtypes, ["float", "int"], op)
    table, idx = shapes
    if len(idx) != 1 or not table:
        raise IRError(f"gather: table {table} with indices {idx}")
    return idx + table[1:], "float"


def _rule_scatter_add(op: Op, shapes, dtypes, attrs):
    _need(dtypes, ["float", "int"], op)
    vals, idx = shapes
    if len(idx) != 1 or not vals or vals[0] != idx[0]:
        raise IRError(f"scatter_add: values {vals} with indices {idx}")
    return (attrs[0], *vals[1:]), "float"


def _rule_reshape(op: Op, shapes, dtypes, attrs):
    (shape,) = shapes
    new = tuple(attrs[0])
    if int(np.prod(new, dtype=np.int64)) != int(np.prod(shape, dtype=np.int64)):
        raise IRError(f"reshape: cannot reshape {shape} to {new}")
    return new, dtypes[0]


def _rule_transpose(op: Op, shapes, dtypes, attrs):
    (shape,) = shapes
    perm = tuple(attrs[0])
    if sorted(perm) != list(range(len(shape))):
        raise IRError(f"transpose: bad permutation {perm} for rank {len(shape)}")
    return tuple(shape[p] for p in perm), dtypes[0]


def _rule_slice(op: Op, shapes, dtypes, attrs):
    (shape,) = shapes
    starts, stops = attrs
    if len(starts) != len(shape) or any(
        not 0 <= a <= b <= n for a, b, n in zip(starts, stops, shape, strict=True)
    ):
        raise IRError(f"slice: bounds {starts}:{stops} out of range for shape {shape}")
    return tuple(b - a for a, b in zip(starts, stops, strict=True)), dtypes[0]


def _rule_pad(op: Op, shapes, dtypes, attrs):
    _need(dtypes, ["float"], op)
    (shape,) = shapes
    before, after = attrs
    if len(before) != len(shape) or min(before + after, default=0) < 0:
        raise IRError(f"pad: bad widths {before}/{after} for shape {shape}")
    return tuple(n + a + b for n, a, b in zip(shape, before, after, strict=True)), "float"


def _rule_concat(op: Op, shapes, dtypes, attrs):
    _need(dtypes, ["float"] * len(dtypes), op)
    ax = _axis(attrs[0], len(shapes[0]), op)
    for s in shapes:
        if len(s) != len(shapes[0]) or s[:ax] + s[ax + 1 :] != shapes[0][:ax] + shapes[0][ax + 1 :]:
            raise IRError(f"concat: shapes {list(shapes)} differ off axis {ax}")
    return (*shapes[0][:ax], sum(s[ax] for s in shapes), *shapes[0][ax + 1 :]), "float"


def _rule_broadcast(op: Op, shapes, dtypes, attrs):
    (shape,) = shapes
    new = tuple(attrs[0])
    try:
        np.broadcast_shapes(shape, new)
    except ValueError:
        raise IRError(f"broadcast: cannot broadcast {shape} to {new}") from None
    if np.broadcast_shapes(shape, new) != new:
        raise IRError(f"broadcast: cannot broadcast {shape} to {new}")
    return new, dtypes[0]


def _rule_where(op: Op, shapes, dtypes, attrs):
    _need(dtypes, ["bool", "float", "float"], op)
    return _same(shapes, op), "float"


def _rule_one_hot(op: Op, shapes, dtypes, attrs):
    _need(dtypes, ["int"], op)
    return shapes[0] + (attrs[0],), "float"


SHAPE_RULES: dict[Op, Callable] = {
    Op.INPUT: _rule_source,
    Op.CONST: _rule_source,
    **{op: _rule_elementwise for op in ELEMENTWISE_UNARY + ELEMENTWISE_BINARY},
    Op.SUM: _rule_reduce,
    Op.SHIFT_MAX: _rule_reduce,
    Op.MATMUL: _rule_matmul,
    Op.GATHER: _rule_gather,
    Op.SCATTER_ADD: _rule_scatter_add,
    Op.RESHAPE: _rule_reshape,
    Op.TRANSPOSE: _rule_transpose,
    Op.SLICE: _rule_slice,
    Op.PAD: _rule_pad,
    Op.CONCAT: _rule_concat,
    Op.BROADCAST: _rule_broadcast,
    Op.WHERE: _rule_where,
    Op.ONE_HOT: _rule_one_hot,
}

ARITY: dict[Op, int | None] = {
    Op.INPUT: 0,
    Op.CONST: 0,
    Op.CONCAT: None,
    Op.WHERE: 3,
    Op.MATMUL: 2,
    Op.GATHER: 2,
    Op.SCATTER_ADD: 2,
    **{op: 2 for op in ELEMENTWISE_BINARY},
}


def arity(op: Op) -> int | None:
    """Number of inputs an op takes (None: any number >= 1)."""
    return ARITY.get(op, 1)


def const_digest(value: np.ndarray) -> str:
    return hashlib.sha256(
        str(value.dtype).encode() + str(value.shape).encode() + value.tobytes()
    ).hexdigest()[:20]


_NP_DTYPE = {"float": np.float64, "int": np.int64, "bool": np.bool_}


def ir_dtype(value: np.ndarray) -> str:
    kind = np.asarray(value).dtype.kind
    if kind == "b":
        return "bool"
    if kind in "iu":
        return "int"
    if kind == "f":
        return "float"
    raise IRError(f"constants must be real numbers, ints or bools, got dtype {value.dtype}")


# ---------------------------------------------------------------- the circuit
@dataclass
class Circuit:
    """A topologically ordered equation list with named inputs and outputs."""

    nodes: list[Node] = field(default_factory=list)
    consts: dict[int, np.ndarray] = field(default_factory=dict)
    inputs: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    scopes: list[str] = field(default_factory=list)
    _intern: dict[tuple, int] = field(default_factory=dict, repr=False)
    _scope_stack: list[str] = field(default_factory=list, repr=False)

    # -- construction
    def add(self, op: Op, inputs: Sequence[int] = (), attrs: tuple = ()) -> int:
        inputs = tuple(int(i) for i in inputs)
        n = arity(op)
        if (n is not None and len(inputs) != n) or (n is None and not inputs):
            raise IRError(
                f"{op.value}: takes {n if n is not None else '1+'} inputs, got {len(inputs)}"
            )
        for i in inputs:
            if not 0 <= i < len(self.nodes):
                raise IRError(f"{op.value}: input %{i} does not exist")
        key = (op, inputs, attrs)
        found = self._intern.get(key)
        if found is not None:
            return found
        shapes = [self.nodes[i].shape for i in inputs]
        dtypes = [self.nodes[i].dtype for i in inputs]
        shape, dtype = SHAPE_RULES[op](op, shapes, dtypes, attrs)
        self.nodes.append(Node(op, inputs, tuple(int(s) for s in shape), dtype, attrs))
        self.scopes.append("/".join(self._scope_stack))
        self._intern[key] = len(self.nodes) - 1
        return len(self.nodes) - 1

    def add_input(self, name: str, shape: Shape, dtype: str = "float") -> int:
        if name in self.inputs:
            raise IRError(f"input {name!r} declared twice")
        if dtype not in _NP_DTYPE:
            raise IRError(f"input {name!r}: unknown dtype {dtype!r}")
        nid = self.add(Op.INPUT, (), (name, tuple(int(s) for s in shape), dtype))
        self.inputs[name] = nid
        return nid

    def add_const(self, value) -> int:
        arr = np.asarray(value)
        dtype = ir_dtype(arr)
        arr = np.array(arr, dtype=_NP_DTYPE[dtype], order="C")
        nid = self.add(Op.CONST, (), (const_digest(arr), arr.shape, dtype))
        self.consts.setdefault(nid, arr)
        return nid

    def set_output(self, name: str, nid: int) -> None:
        if name in self.outputs:
            raise IRError(f"output {name!r} set twice")
        self.outputs[name] = int(nid)

    def scope(self, name: str) -> _Scope:
        return _Scope(self, name)

    # -- reading
    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[tuple[int, Node]]:
        return iter(enumerate(self.nodes))

    def input_shape(self, name: str) -> Shape:
        return self.nodes[self.inputs[name]].shape

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op.value] = counts.get(node.op.value, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def depth(self) -> int:
        level = [0] * len(self.nodes)
        for i, node in enumerate(self.nodes):
            level[i] = 1 + max((level[j] for j in node.inputs), default=-1)
        return max(level, default=0)

    def users(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.nodes]
        for i, node in enumerate(self.nodes):
            for j in node.inputs:
                out[j].append(i)
        return out

    def format_node(self, i: int) -> str:
        node = self.nodes[i]
        args = " ".join(f"%{j}" for j in node.inputs)
        attrs = (
            ""
            if not node.attrs
            else " " + repr(node.attrs if node.op is not Op.CONST else node.attrs[0])
        )
        shape = ",".join(str(s) for s in node.shape)
        scope = f"  # {self.scopes[i]}" if self.scopes[i] else ""
        return f"%{i} = {node.op.value} {args}{attrs} : {node.dtype}[{shape}]{scope}".replace(
            "  :", " :"
        )

    def __str__(self) -> str:
        lines = [self.format_node(i) for i in range(len(self.nodes))]
        lines += [f"output {name} = %{nid}" for name, nid in self.outputs.items()]
        return "\n".join(lines)

    def fingerprint(self) -> str:
        """Content hash of the equations, constants and interface."""
        h = hashlib.sha256()
        for i, node in enumerate(self.nodes):
            h.update(f"{node.op.value}{node.inputs}{node.attrs}{node.shape}{node.dtype};".encode())
            if i in self.consts:
                h.update(self.consts[i].tobytes())
        h.update(repr(sorted(self.inputs.items())).encode())
        h.update(repr(sorted(self.outputs.items())).encode())
        return h.hexdigest()[:24]

    def verify(self) -> None:
        """Check single assignment, order, arity, shapes and the interface."""
        for i, node in enumerate(self.nodes):
            n = arity(node.op)
            if n is not None and len(node.inputs) != n:
                raise IRError(f"%{i} {node.op.value}: arity {len(node.inputs)} != {n}")
            if any(not 0 <= j < i for j in node.inputs):
                raise IRError(f"%{i} {node.op.value}: uses a node that is not defined before it")
            shapes = [self.nodes[j].shape for j in node.inputs]
            dtypes = [self.nodes[j].dtype for j in node.inputs]
            if SHAPE_RULES[node.op](node.op, shapes, dtypes, node.attrs) != (
                node.shape,
                node.dtype,
            ):
                raise IRError(f"%{i} {node.op.value}: recorded shape/dtype disagree with its rule")
            if node.op is Op.CONST and (i not in self.consts or self.consts[i].shape != node.shape):
                raise IRError(f"%{i} const: value missing or of the wrong shape")
        for name, nid in self.inputs.items():
            if self.nodes[nid].op is not Op.INPUT or self.nodes[nid].attrs[0] != name:
                raise IRError(f"input {name!r} does not point at its input node")
        for name, nid in self.outputs.items():
            if not 0 <= nid < len(self.nodes):
                raise IRError(f"output {name!r} points outside the circuit")


class _Scope:
    def __init__(self, circuit: Circuit, name: str):
        self.circuit, self.name = circuit, name

    def __enter__(self) -> None:
        self.circuit._scope_stack.append(self.name)

    def __exit__(self, *exc) -> None:
        self.circuit._scope_stack.pop()


Rewrite = Callable[["Circuit", int, Node, list[int]], "int | None"]


def replay(
    source: Circuit,
    out: Circuit,
    keep: Callable[[int, Node], bool] | None = None,
    rewrite: Rewrite | None = None,
) -> dict[int, int]:
    """Copy source's equations into out (re-interning); returns old id -> new id.

    ``rewrite(out, i, node, new_inputs)`` may return the id of a replacement
    built in ``out`` (or None to copy the node as it is): the one loop that
    every node-by-node pass is written with.
    """
    remap: dict[int, int] = {}
    for i, node in source:
        if keep is not None and not keep(i, node):
            continue
        out._scope_stack[:] = [source.scopes[i]] if source.scopes[i] else []
        ins = [remap[j] for j in node.inputs]
        new = rewrite(out, i, node, ins) if rewrite is not None else None
        if new is not None:
            remap[i] = new
        elif node.op is Op.INPUT:
            remap[i] = out.add_input(node.attrs[0], node.shape, node.dtype)
        elif node.op is Op.CONST:
            remap[i] = out.add_const(source.consts[i])
        else:
            remap[i] = out.add(node.op, ins, node.attrs)
    out._scope_stack.clear()
    return remap


def rebuild(
    circuit: Circuit,
    keep: Callable[[int, Node], bool] | None = None,
    rewrite: Rewrite | None = None,
) -> Circuit:
    """A copy of a circuit with the same outputs, optionally dropping or rewriting nodes."""
    out = Circuit()
    remap = replay(circuit, out, keep, rewrite)
    for name, nid in circuit.outputs.items():
        out.set_output(name, remap[nid])
    return out
