"""Calls through function pointers: generated code that does not link what it calls.

Numba links the code of every function a compiled function calls into the
caller's own module, where LLVM optimises it and generates its machine code
again; a series block of a hundred lines calls two dozen kernels and fused
loops, so most of its compile time went to code compiled before.  Generated
parts and blocks (``emit.emit_function``) instead call them as
``p.call(P[j], callee, args...)``: ``call`` is typed like ``callee(args...)``
(which compiles or loads the callee on its own) and jumps to the address in
``P[j]``, so the caller's module holds only its own code.  ``table`` fills P
at run time with each callee's address for the argument types of the call,
which are those of the function's parameters: the same types the call is
typed with when the function compiles.
The callee's code is then the one compiled for it alone, so the bits are the
same as when it was linked (no fast-math: LLVM may not reorder arithmetic).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic
from numba.core.typing import signature

Call = tuple[str, tuple[str, ...]]
"""A call site: the callee (``k.<kernel>`` or a generated function) and its arguments,
the names of parameters of the function that calls it."""

_STATEMENT = re.compile(r"^(res0\[-1\] \+= )?((?:k\.)?\w+)\((.*)\)$")
_THROUGH = re.compile(r"^(res0\[-1\] \+= )?p\.call\(P\[(\d+)\], ((?:k\.)?\w+), (.*)\)$")
LINKED = ""
"""Callees called directly (linked), space-separated; ``"*"``: every callee (the code
as before pointers, for an A/B in bench/ab_step.py)."""


@intrinsic
def call(typingctx, addr, fn, *args):
    """``fn(*args)`` through the native function at address `addr` (fn's overload for
    these argument types): fn is typed, not linked."""
    argtys = tuple(args)
    sig = typingctx.resolve_function_type(fn, argtys, {})
    if sig is None:
        return None
    restype, callee_args = sig.return_type, sig.args

    def codegen(context, builder, isig, llargs):
        values = cgutils.unpack_tuple(builder, llargs[2])
        fnty = context.call_conv.get_function_type(restype, callee_args)
        ptr = builder.inttoptr(llargs[0], fnty.as_pointer())
        status, res = context.call_conv.call_function(builder, ptr, restype, callee_args,
                                                      values)  # fmt: skip
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return res

    return signature(restype, addr, fn, types.StarArgTuple.from_types(argtys)), codegen


def _names(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(","))


def through_pointers(line: str, calls: list[Call]) -> str:
    """A line of statements with each call (but those in LINKED) made through ``P[j]``,
    j its index in `calls`, to which it is appended."""
    out = []
    for statement in line.split("; "):
        m = _STATEMENT.match(statement)
        if m is None or m.group(2) in LINKED.split() or LINKED == "*":
            out.append(statement)
            continue
        prefix, callee, args = m.groups()
        out.append(f"{prefix or ''}p.call(P[{len(calls)}], {callee}, {args})")
        calls.append((callee, _names(args)))
    return "; ".join(out)


def table(calls: Sequence[Call], scope: Mapping[str, object],
          params: Mapping[str, types.Type]) -> np.ndarray:  # fmt: skip
    """The addresses P of `calls` in a function whose parameters have the numba types
    `params`: each callee compiled (or loaded from the cache) for its argument types.
    scope: the function's globals (its callees by name, and the kernels module ``k``)."""
    return np.array([_address_of(c, scope, params) for c in calls], np.int64)


def load_callees(fn, params: Mapping[str, types.Type], reverse: bool = False) -> None:
    """Compile (or load) what generated function `fn` calls through its table, for
    parameters of types `params`, in order (`reverse`: the last call first, for a
    second process compiling beside one that goes in order)."""
    calls = calls_of(fn)
    for c in reversed(calls) if reverse else calls:
        _address_of(c, fn.py_func.__globals__, params)


def _address_of(c: Call, scope: Mapping[str, object], params: Mapping[str, types.Type]) -> int:
    callee, args = c
    return address(_resolve(callee, scope), tuple(_type_of(a, params) for a in args))


def address(fn, argtys: tuple[types.Type, ...]) -> int:
    """The native entry of `fn`'s overload for `argtys` (compiled or loaded if new)."""
    cres = fn.overloads.get(argtys)
    if cres is None:
        fn.compile(argtys)
        cres = fn.overloads[argtys]
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)


def _resolve(callee: str, scope: Mapping[str, object]):
    return getattr(scope["k"], callee[2:]) if callee.startswith("k.") else scope[callee]


def _type_of(arg: str, params: Mapping[str, types.Type]) -> types.Type:
    if arg not in params:
        raise ValueError(f"cannot type the argument {arg!r} of a call through a pointer")
    return params[arg]


def param_types(names: Sequence[str], values: Sequence[object]) -> dict[str, types.Type]:
    """Numba's types of the values a function is called with, by parameter name."""
    return {n: numba.typeof(v) for n, v in zip(names, values, strict=True)}


def calls_of(fn) -> tuple[Call, ...]:
    """The call sites through P of a generated part or block, read from its source (so
    the table always matches the code that runs)."""
    calls: list[Call] = []
    for statement in re.split(r"; |\n", inspect.getsource(fn.py_func)):
        m = _THROUGH.match(statement.strip())
        if m is not None:
            if int(m.group(2)) != len(calls):
                raise ValueError(f"{fn.__name__}: call site P[{m.group(2)}] out of order")
            calls.append((m.group(3), _names(m.group(4))))
    return tuple(calls)


class AddressTables:
    """The address tables of one generated module's functions, each made once per types.

    part(fn, params): the table P of part or block `fn`; entry(name, params): the
    table PT of entry function `name`, its distinct parts' tables one after another
    in the order of ``<name>_PARTS`` (``emit.emit_function``).  params: the numba
    types of the function's parameters, by name (``param_types``)."""

    def __init__(self, module):
        self.module = module
        self._made: dict[tuple, np.ndarray] = {}

    def part(self, fn, params: Mapping[str, types.Type]) -> np.ndarray:
        key = (fn.__name__, tuple(params.items()))
        if key not in self._made:
            self._made[key] = table(calls_of(fn), fn.py_func.__globals__, params)
        return self._made[key]

    def entry(self, name: str, params: Mapping[str, types.Type]) -> np.ndarray:
        key = (name, tuple(params.items()))
        if key not in self._made:
            parts = dict.fromkeys(getattr(self.module, f"{name}_PARTS"))
            self._made[key] = np.concatenate(
                [self.part(fn, params) for fn in parts] or [np.zeros(0, np.int64)])
        return self._made[key]

    def call(self, name: str, *args):
        """Entry function `name` called with `args` and its table (made for the types of
        `args`, which its parts take too, and the row ``r``)."""
        fn = getattr(self.module, name)
        code = fn.py_func.__code__
        names = code.co_varnames[: code.co_argcount - 1]  # all but the table PT
        return fn(*args, self.entry(name, param_types([*names, "r"], [*args, 0])))
