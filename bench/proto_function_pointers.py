"""Prototype behind issue 20's next step: series glue calling the library kernels through
function pointers instead of linking them.

Numba links the code of every kernel a generated function calls into that function's
module, where LLVM optimizes it and generates its machine code again: a series block
of 111 lines carries 24 kernels.  Numba's first-class functions (a kernel's compiled
overload passed as a ``FunctionType`` value, here in a namedtuple argument) are called
through a pointer instead, so the module holds only the block's own code.  This script
takes one generated block of a 3-layer, 48-wide K = 3 microgpt, compiles it both ways
in this process (library kernels from the cache) and times one call of each inside a
compiled loop (8 directions, at the block's place in the step), and last what a call
from Python costs that passes the function pointers (Numba types every one of them
at each call).  Run from the
repository root after any command that compiled that model (it loads the kernels):

    python bench/proto_function_pointers.py [BLOCK_NAME]
"""

from __future__ import annotations

import collections
import re
import sys
import time
import warnings
from pathlib import Path

import numba
import numpy as np
from numba import njit
from numba.core.types.function_type import CompileResultWAP

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DECO = "@njit(cache=True, nogil=True, error_model='numpy')\n"
B = 8  # directions


def main() -> None:
    warnings.simplefilter("ignore", numba.NumbaExperimentalFeatureWarning)
    from circuitsketch.models import microgpt as m
    from compiler import kernels as k
    from compiler.compiled import CompiledProgram
    from runtime.precompute import load_series_code

    docs = m.read_docs(m.corpus_path())[:50]
    cp = CompiledProgram(m.build(docs, n_layer=3, n_embd=48), 3)
    load_series_code(cp)
    blocks = {
        x.group(1): x.group(0)
        for x in re.finditer(r"^def (block_\w+)\(.*?(?=^def |^\w+ = |\Z)", cp.source, re.M | re.S)
    }
    name = sys.argv[1] if len(sys.argv) > 1 else next(iter(blocks))
    text = blocks[name]
    sig = getattr(cp.module, name).signatures[0]
    params = re.search(r"def \w+\((.*?)\)", text).group(1).split(", ")
    ptype = dict(zip(params, sig, strict=True))

    # each kernel's overload for the argument types of its first call in the block
    called = sorted(set(re.findall(r"\bk\.(\w+)\(", text)) - {"hblock"})
    fns = {}
    for n in called:
        call = re.search(r"\bk\." + n + r"\((.*?)\);", text).group(1)
        argt = tuple(ptype[a.strip()] for a in call.split(","))
        getattr(k, n).compile(argt)
        fns[n] = CompileResultWAP(getattr(k, n).overloads[argt])
    kt = collections.namedtuple("Kernels", called)(**fns)

    g = {**vars(cp.module), "k": k}
    exec(text.replace(DECO, "").replace(f"def {name}(", "def linked_block(", 1), g)
    pointers = re.sub(r"\bk\.(?!hblock)(\w+)\(", r"kt.\1(", text)
    exec(pointers.replace(DECO, "").replace(f"def {name}(", "def pointer_block(kt, ", 1), g)
    linked = njit(nogil=True, error_model="numpy")(g["linked_block"])
    pointer = njit(nogil=True, error_model="numpy")(g["pointer_block"])
    t = time.perf_counter()
    linked.compile(sig)
    t_linked = time.perf_counter() - t
    t = time.perf_counter()
    pointer.compile((numba.typeof(kt), *sig))
    t_pointer = time.perf_counter() - t
    print(f"{name}: {len(text.splitlines())} lines calling {len(called)} kernels")
    print(f"compile: linked {t_linked:.2f} s, through function pointers {t_pointer:.2f} s")

    # one call at the block's first place in step_0, in a compiled loop
    psi = np.random.default_rng(1).normal(size=(B, len(docs))) + 0j
    s = int(np.flatnonzero(cp.keys == 0)[0])
    s0, h0, _ = cp.train_series(psi, stop=s)
    kd = cp.degree
    args = {
        "s_in": s0, "s_out": np.empty_like(s0), "h_in": h0, "h_out": np.empty_like(h0),
        "ws": np.zeros(cp.ws_size), "wh": np.zeros(B * kd * cp.wh_size, complex),
        "tab": cp.tab, "cst": cp.cst, "ii": cp.II[s], "ff": cp.FF[s],
        "w0": np.zeros(cp.ndocs[s]),
        "wpsi": np.ascontiguousarray(psi.T[cp.docs[s, : cp.ndocs[s]]]),
        "res0": np.zeros(2), "resh": np.zeros(B * kd, complex), "code": cp.instr, "B": B, "K": kd,
    }  # fmt: skip
    r = cp.module.step_0_FIRST_ROW
    for part in cp.module.step_0_PARTS:
        if part.py_func.__name__ == name:
            break
        r = part(*[args[q] for q in params[:-1]], r)
    vals = [args[q] for q in params[:-1]] + [r]

    @njit
    def loop_linked(n, *a):
        for _ in range(n):
            linked(*a)

    @njit
    def loop_pointer(n, kt, *a):
        for _ in range(n):
            pointer(kt, *a)

    loop_linked(1, *vals)
    loop_pointer(1, kt, *vals)
    for _ in range(3):
        t = time.perf_counter()
        loop_linked(200, *vals)
        a = (time.perf_counter() - t) / 200
        t = time.perf_counter()
        loop_pointer(200, kt, *vals)
        b = (time.perf_counter() - t) / 200
        print(f"one call ({B} directions): linked {a * 1e6:.0f} us, function pointers "
              f"{b * 1e6:.0f} us ({b / a:.3f})")  # fmt: skip

    @njit
    def touch(kt, x):
        return x + 1

    touch(kt, 1)
    t = time.perf_counter()
    for _ in range(1000):
        touch(kt, 1)
    print(f"a Python call passing the {len(called)} function pointers: "
          f"{(time.perf_counter() - t) * 1e3:.0f} us")  # fmt: skip


if __name__ == "__main__":
    main()
