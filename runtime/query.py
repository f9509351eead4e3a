"""Answer questions from a sketch: coefficients of test documents, deletion predictions.

``coefficients(sketch, docs)`` evaluates the compiled output circuit (degree
K) on the stored parameter series of every direction, chunk by chunk, and
caches the (M, K+1) result per test document in ``SKETCH/cache/``, a derived
result of the whole sketch (``runtime.derived``: keyed by the checksums of
the configuration and of every array file, dropped when they change, and
refused when the sketch's files no longer match them).  A repeated query
reads only the cache and the directions, and checks the other files by
their stamps.

``deletion_weights`` turns --delete-indices / --delete-file / --delete-contains
and --weight into the weight vector w in [0, 1]^N of the spec.

Test inputs are whatever the sketch's program source takes (``runtime.sources``):
microgpt texts (plain strings) or, for a user program's sketch, TestInputs
holding a dict of arrays; the source checks them.  Results are keyed by the
input's ``key`` (a text's key is the text itself).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from runtime import estimate as est
from runtime.sources import TestInput, sketch_source
from runtime.spec import compiled, fingerprints
from runtime.store import Sketch, SketchError, chunk_name

__all__ = [
    "CACHE_DIR",
    "check_tests",
    "coefficient_cache",
    "coefficients",
    "counted",
    "deletion_weights",
    "parse_indices",
    "predict",
    "sketch_program",
]

CACHE_DIR = "cache"
OUTPUT_BATCH = 64  # directions evaluated per call of the output circuit (bounds memory)


def sketch_program(sketch: Sketch):
    """The compiled degree-K program of a sketch, its traced circuits checked against the
    manifest's fingerprints (not its generated code: see ``Sketch.check_compiled``).
    Only the circuits matter here, so the source need not read an init file."""
    cp = compiled(sketch_source(sketch), sketch.degree)
    sketch.check_compiled(fingerprints(cp))
    return cp


def check_tests(sketch: Sketch, tests: Sequence[str | TestInput]) -> list[TestInput]:
    """The test inputs as TestInputs, checked by the sketch's program source (ValueError)."""
    return sketch_source(sketch).check_tests(tests)


def coefficient_cache(sketch: Sketch, warn: Callable[[str], None] | None = None):
    """The store of per-test-input coefficients beside `sketch` (``Sketch.derived``):
    computed from every array file of the sketch and its configuration."""
    return sketch.derived(CACHE_DIR, label="cached coefficients", warn=warn)


def coefficients(
    sketch: Sketch,
    docs: Sequence[str | TestInput],
    use_cache: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """key -> (M, K+1) complex128 coefficients c_0..c_K of its test loss, per direction.

    The key of a text is the text; of a TestInput, its ``key``.
    """
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    tests = {t.key: t for t in check_tests(sketch, docs)}
    check_memory(sketch, len(tests))
    out: dict[str, np.ndarray] = {}
    cache = coefficient_cache(sketch, warn)
    shape = (sketch.num_directions, sketch.degree + 1)
    for d in tests:
        if use_cache:
            hit = cache.get(d, shape=shape, dtype=np.complex128)
            if hit is not None:
                out[d] = hit.array
    todo = [d for d in tests if d not in out]
    if not todo:
        return out
    from compiler.compiled import output_from_params

    cp = sketch_program(sketch)
    p0 = sketch.params0()
    m, k = sketch.num_directions, sketch.degree
    res = {d: np.empty((m, k + 1), np.complex128) for d in todo}
    for c in range(sketch.num_chunks):
        a, b = sketch.chunk_bounds(c)
        phi = sketch.chunk(c)
        if phi.shape != (b - a, k, p0.size):
            raise SketchError(
                f"sketch {str(sketch.path)!r}: chunk {c} holds {phi.shape}, expected "
                f"{(b - a, k, p0.size)}"
            )
        for s in range(0, b - a, OUTPUT_BATCH):
            part = np.ascontiguousarray(phi[s : s + OUTPUT_BATCH])
            for d in todo:
                res[d][a + s : a + s + part.shape[0]] = output_from_params(
                    cp, p0, part, tests[d].value
                )
        sketch._arrays.pop(chunk_name(c), None)  # keep memory flat for big sketches
    for d in todo:
        out[d] = res[d]
        if use_cache:
            cache.put(d, res[d])
    return out


def check_memory(sketch: Sketch, tests: int) -> None:
    """ResourceError before reading anything if querying `tests` inputs cannot fit."""
    from runtime import resources

    files = sketch.manifest["files"]
    chunk_bytes = max((files[chunk_name(c)]["bytes"] for c in sketch.done_chunks()), default=0)
    p = int(np.prod(files["params0.npy"]["shape"])) if "params0.npy" in files else 0
    m, n, k = sketch.num_directions, sketch.num_docs, sketch.degree
    resources.require(
        resources.query_memory(m, n, k, chunk_bytes, p, tests, OUTPUT_BATCH),
        f"a query of sketch {str(sketch.path)!r} (M = {m} directions x N = {n} documents, "
        f"K = {k}, {tests} test input(s))",
        "query fewer test inputs at once, or on a machine with more memory",
    )


# ---------------------------------------------------------------- deletion sets
def parse_indices(text: str, n: int, what: str = "--delete-indices") -> list[int]:
    """'3,5,10-12' -> [3, 5, 10, 11, 12]; each index must be in 0..n-1 and given once.

    Strict, as --sets is: int() alone would take '1_0', '+1', ' 1' and non-ASCII digits,
    and a repeated index would silently delete one document.
    """
    if not text.strip():
        raise ValueError(f"{what}: no index given")
    out: list[int] = []
    for part in text.split(","):
        if not part:
            raise ValueError(f"{what}: an empty item in {text!r} (separate indices by commas)")
        lo, dash, hi = part.partition("-")
        if not _ascii_digits(lo) or (dash and not _ascii_digits(hi)):
            raise ValueError(f"{what}: {part!r} is not an index or a range like 10-12")
        a = int(lo)
        b = int(hi) if dash else a
        if b < a:
            raise ValueError(f"{what}: empty range {part!r}")
        for i in (a, b):
            if not 0 <= i < n:
                raise ValueError(
                    f"{what}: index {i} is out of range: there are {n} training documents "
                    f"(indices 0..{n - 1})"
                )
        out.extend(range(a, b + 1))
    out.sort()
    dup = next((i for i, j in itertools.pairwise(out) if i == j), None)
    if dup is not None:
        raise ValueError(f"{what}: index {dup} appears more than once")
    return out


def _ascii_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def deletion_weights(
    docs: Sequence[str],
    indices: str | None = None,
    file: str | Path | None = None,
    contains: str | None = None,
    weight: float = 1.0,
    text_docs: bool = True,
) -> tuple[np.ndarray, list[int], str]:
    """(w (N,), selected indices, a description) for exactly one selection option.

    --delete-file holds either indices (every non-blank line an integer or a
    range) or document texts (every training document equal to a line is
    selected; a line matching none is an error).  Without `text_docs` (a user
    program's documents are arrays) only indices are accepted.
    """
    n = len(docs)
    given = [x is not None for x in (indices, file, contains)]
    if sum(given) != 1:
        raise ValueError(
            "choose the documents to delete with exactly one of --delete-indices, "
            "--delete-file or --delete-contains"
        )
    if not text_docs and contains is not None:
        raise ValueError(
            "--delete-contains selects text documents, but this program's documents are "
            "arrays: choose them by index with --delete-indices or --delete-file"
        )
    if not (0.0 <= weight <= 1.0) or not np.isfinite(weight):
        raise ValueError(f"--weight must be in [0, 1] (1 = delete), got {weight}")
    if indices is not None:
        sel = parse_indices(indices, n)
        what = f"documents at {'index' if len(sel) == 1 else 'indices'} {indices}"
    elif file is not None:
        from runtime.sources.documents import read_documents

        p = Path(file)
        lines = read_documents(p, "--delete-file", blank_ok=True)
        if all(ln.replace("-", "").isdigit() for ln in lines):
            sel = parse_indices(",".join(lines), n, f"--delete-file {str(p)!r}")
        elif not text_docs:
            bad = next(ln for ln in lines if not ln.replace("-", "").isdigit())
            raise ValueError(
                f"--delete-file {str(p)!r}: {bad!r} is not an index or a range like 10-12 "
                "(this program's documents are arrays: list their indices)"
            )
        else:
            where: dict[str, list[int]] = {}
            for i, d in enumerate(docs):
                where.setdefault(d, []).append(i)
            sel_set: set[int] = set()
            for ln in lines:
                if ln not in where:
                    raise ValueError(
                        f"--delete-file {str(p)!r}: {ln!r} is not one of the training documents"
                    )
                sel_set.update(where[ln])
            sel = sorted(sel_set)
        what = f"documents listed in {str(p)!r}"
    else:
        assert contains is not None
        if not contains:
            raise ValueError("--delete-contains: empty substring")
        sel = [i for i, d in enumerate(docs) if contains in d]
        if not sel:
            raise ValueError(f"--delete-contains: no training document contains {contains!r}")
        what = f"documents containing {contains!r}"
    w = np.zeros(n)
    w[sel] = weight
    return w, sel, what


def counted(n: int, what: str) -> str:
    """'1 document at index 3', '5 documents containing ...': `what` as deletion_weights
    describes it ("documents ...") with its count."""
    rest = what.removeprefix("documents")
    return f"{n} document{'' if n == 1 else 's'}{rest}"


def predict(
    sketch: Sketch,
    docs: Sequence[str | TestInput],
    weights: np.ndarray,
    degree: int | None = None,
    groups: int | None = None,
    warn: Callable[[str], None] | None = None,
    first_order: dict[str, np.ndarray | None] | None = None,
) -> list[dict]:
    """One result dict per test doc: prediction, c0, terms, stderr, median_of_means, ...

    `first_order` maps a test input's key to its exact metagradient g (N,):
    those inputs get the hybrid estimator (exact <g, w>, errors from orders
    >= 2).  Each result says which ("estimator": "hybrid" | "sketch") and,
    for hybrid, holds "first_order_exact" = <g, w>.
    """
    if degree is not None and not 1 <= degree <= sketch.degree:
        raise ValueError(f"--degree must be between 1 and the sketch's degree {sketch.degree}")
    tests = check_tests(sketch, docs)
    coefs = coefficients(sketch, tests, warn=warn)
    psi = sketch.directions()
    w = np.asarray(weights, np.float64)
    out = []
    for t in tests:
        g = (first_order or {}).get(t.key)
        e = est.estimate(coefs[t.key], psi, w, degree, groups, first_order=g)
        r = {"doc": t.label, **e.one(0), "estimator": "sketch" if g is None else "hybrid"}
        # <g, w> as the estimator used it (None: the first order is sketched)
        r["first_order_exact"] = None if g is None else r["terms"][0]
        out.append(r)
    return out
