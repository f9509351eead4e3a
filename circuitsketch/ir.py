"""The circuit IR: a flat, topologically ordered list of tensor-level equations.

A node is ``(op, inputs, attrs)`` with a static shape and dtype; its id is its
position in ``Circuit.nodes`` so every pass is a plain loop over the list.
Building the same expression twice returns the same node (interning).  Every op
has one registry entry (``OPS[op]``, an ``OpDef``) holding its shape rule, numpy
evaluation, series rule, VJP, sympy lowering and how compiled code computes it;
the entries live in ``circuitsketch/ops/``, so adding an op means one line in
``Op`` and one entry there.

Dtypes are ``"float"`` (differentiable values, float64 or complex128 at run
time), ``"int"`` (token ids) and ``"bool"`` (masks: constants, or comparisons of
the real order-0 parts of traced values).
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

Shape = tuple[int, ...]


class IRError(ValueError):
    """A circuit is malformed: a shape, dtype or arity does not fit its op."""


class Op(enum.Enum):
    """Every operation a circuit can hold; each has one registry entry (``OPS[op]``)."""

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
    TANH = "tanh"
    SIGMOID = "sigmoid"
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
    GREATER = "greater"
    GREATER_EQUAL = "greater_equal"
    SHIFT_MAX = "shift_max"
    ONE_HOT = "one_hot"


class Family(enum.Enum):
    """How a series passes through an op (what the activity analysis and the rules rely on)."""

    SOURCE = "source"  # inputs and constants
    LINEAR = "linear"  # acts on every Taylor coefficient independently
    BILINEAR = "bilinear"  # Cauchy product
    ANALYTIC = "analytic"  # needs a recurrence on coefficients
    ORDER0 = "order0"  # reads only the real order-0 part; the result carries no series
    INDEX = "index"  # integer-valued or integer-driven, never differentiated


@dataclass(frozen=True)
class Node:
    op: Op
    inputs: tuple[int, ...]
    shape: Shape
    dtype: str
    attrs: tuple = ()

    @property
    def size(self) -> int:
        return math.prod(self.shape)


# ---------------------------------------------------------------- the op registry
ShapeRule = Callable[[Op, Sequence[Shape], Sequence[str], tuple], tuple[Shape, str]]


@dataclass(frozen=True)
class Code:
    """How compiled code computes an op (read by ``compiler/``; plain data here).

    kernel: the order-0 kernel ``compiler.kernels.<kernel>`` taking the operands'
    arrays, the result's array, ``code, r`` and, by name, ``tab``/``cst``; None: a
    loop generated from ``scalar``.  scalar: one element's expression from its
    operands' (``"({0} + {1})"``, or a function of the operand expressions and the
    node), for fused and generated loops.  series: the name of the higher-order rule
    (``compiler/series_rules.py``) shared by every op that uses it.  params: the
    op-specific integers of its instruction row (E0..E3) from the node and its
    operand shapes; an int array goes to the int table, a float array to the
    float table, and the row holds its offset.  alias: the result is its operand's
    memory (reshape of a flat buffer).
    """

    kernel: str | None = None
    scalar: str | Callable[[list[str], Node], str] | None = None
    series: str | None = None
    params: Callable[[Node, list[Shape]], tuple] | None = None
    alias: bool = False

    def scalar_expr(self, args: list[str], node: Node) -> str:
        if self.scalar is None:
            raise IRError(f"{node.op.value}: no scalar expression for fused loops")
        if isinstance(self.scalar, str):
            return self.scalar.format(*args)
        return self.scalar(args, node)


@dataclass(frozen=True)
class OpDef:
    """Everything about one primitive: what it means and how each transformation treats it.

    shape: (op, operand shapes, operand dtypes, attrs) -> (shape, dtype), raising
    IRError.  eval: the numpy definition on real or complex arrays (``interpret``).
    series: its rule on truncated series, arrays (K+1, *shape) of normalised
    coefficients (``series_math``).  vjp: (cotangent, node, operands, result) ->
    operand cotangents as traced values (``grad``); None: carries no gradient.
    sympy: the scalar sympy function of an elementwise op, or a function of
    (operand object arrays, node) (``sympy_lowering``); None: data movement, lowered
    by running ``eval`` on arrays of expressions.  flops: its cost in inspect's model.
    """

    op: Op
    family: Family
    arity: int | None  # None: any number >= 1
    shape: ShapeRule
    eval: Callable | None = None
    series: Callable | None = None
    vjp: Callable | None = None
    sympy: Callable | None = None
    code: Code = Code()
    flops: Callable[[Node, list[Shape]], int] = lambda node, shapes: 0
    numpy_name: str | None = None  # the numpy ufunc traced arrays answer with this op


OPS: dict[Op, OpDef] = {}
"""The registry: one entry per op, filled by ``register`` in ``circuitsketch/ops/``."""


def register(entry: OpDef) -> OpDef:
    if entry.op in OPS:
        raise IRError(f"op {entry.op.value!r} is registered twice")
    OPS[entry.op] = entry
    return entry


def opdef(op: Op) -> OpDef:
    """The registry entry of op (IRError naming it when there is none)."""
    entry = OPS.get(op)
    if entry is None:
        raise IRError(f"op {op.value!r} has no registry entry")
    return entry


def family(op: Op) -> Family:
    return opdef(op).family


def arity(op: Op) -> int | None:
    """Number of inputs an op takes (None: any number >= 1)."""
    return opdef(op).arity


def _rule_source(op: Op, shapes, dtypes, attrs):
    return tuple(attrs[1]), attrs[2]


register(OpDef(Op.INPUT, Family.SOURCE, 0, _rule_source))
register(OpDef(Op.CONST, Family.SOURCE, 0, _rule_source))


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
        shape, dtype = opdef(op).shape(op, shapes, dtypes, attrs)
        self.nodes.append(Node(op, inputs, tuple(int(s) for s in shape), dtype, attrs))
        self.scopes.append("/".join(self._scope_stack))
        self._intern[key] = len(self.nodes) - 1
        return len(self.nodes) - 1

    def add_like(self, node: Node, inputs: tuple[int, ...] | list[int]) -> int:
        """``add(node.op, inputs, node.attrs)`` for operands of the same shapes and dtypes as
        the node's own had (a copy in ``replay``): its shape and dtype are kept, not derived."""
        key = (node.op, tuple(inputs), node.attrs)
        found = self._intern.get(key)
        if found is not None:
            return found
        self.nodes.append(Node(node.op, key[1], node.shape, node.dtype, node.attrs))
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
            if opdef(node.op).shape(node.op, shapes, dtypes, node.attrs) != (
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
    order: Sequence[int] | None = None,
) -> dict[int, int]:
    """Copy source's equations into out (re-interning); returns old id -> new id.

    ``rewrite(out, i, node, new_inputs)`` may return the id of a replacement
    built in ``out`` (or None to copy the node as it is): the one loop that
    every node-by-node pass is written with.  ``order``: the equations in
    another topological order (default: as they are).
    """
    remap: dict[int, int] = {}
    for i, node in source if order is None else ((i, source.nodes[i]) for i in order):
        if keep is not None and not keep(i, node):
            continue
        out._scope_stack[:] = [source.scopes[i]] if source.scopes[i] else []
        ins = [remap[j] for j in node.inputs]
        new = rewrite(out, i, node, ins) if rewrite is not None else None
        if new is not None:
            remap[i] = new
        elif node.op is Op.INPUT:
            remap[i] = out.add_input(node.attrs[0], node.shape, node.dtype)
        elif node.op is Op.CONST:  # its digest kept: the same value
            remap[i] = out.add_like(node, ())
            out.consts.setdefault(remap[i], source.consts[i].copy())
        elif all(out.nodes[k].shape == source.nodes[j].shape
                 and out.nodes[k].dtype == source.nodes[j].dtype
                 for j, k in zip(node.inputs, ins, strict=True)):
            remap[i] = out.add_like(node, ins)  # operands as before: its shape rule holds
        else:
            remap[i] = out.add(node.op, ins, node.attrs)
    out._scope_stack.clear()
    return remap


def rebuild(
    circuit: Circuit,
    keep: Callable[[int, Node], bool] | None = None,
    rewrite: Rewrite | None = None,
    order: Sequence[int] | None = None,
) -> Circuit:
    """A copy of a circuit with the same outputs, optionally dropping or rewriting nodes, or
    with its equations in another topological `order`."""
    out = Circuit()
    remap = replay(circuit, out, keep, rewrite, order)
    for name, nid in circuit.outputs.items():
        out.set_output(name, remap[nid])
    return out
