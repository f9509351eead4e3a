"""Questions to a sketch: ``query``, ``coefficients``, ``influence``, ``stability``.

Each opens SKETCH with its program source (``options.sketch_and_tests``),
asks ``runtime.query`` / ``runtime.estimate`` and prints a table or JSON.
"""

from __future__ import annotations

import argparse
from typing import Any

from runtime.cli.common import (
    CLIError,
    Command,
    fmt_pm,
    nonnegative_int,
    one_or_list,
    positive_int,
    print_json,
    series_degree,
    user_errors,
    warn,
    write,
)
from runtime.cli.options import (
    add_deletion,
    add_json,
    add_sketch_and_tests,
    deletion,
    sketch_and_tests,
)
from runtime.cli.sets import add_batch_query, run_batch_query

__all__ = ["COEFFICIENTS", "INFLUENCE", "QUERY", "STABILITY"]


def configure_query(p: argparse.ArgumentParser) -> None:
    add_sketch_and_tests(p)
    add_deletion(p, sets=True)
    add_batch_query(p)
    p.add_argument(
        "--degree",
        type=series_degree,
        metavar="k",
        help="use terms up to degree k (default: all of K)",
    )
    p.add_argument(
        "--groups",
        type=positive_int,
        metavar="G",
        help="median-of-means groups (default: M/4, between 1 and 9)",
    )
    p.add_argument(
        "--hybrid",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="exact first-order term <g, w> from the metagradient g (computed once per test "
        "input and stored in SKETCH/metagrad) plus the sketched orders >= 2, whose spread "
        "alone makes the error bars; default: hybrid for test inputs whose metagradient is "
        "already stored; --no-hybrid: the pure sketch",
    )
    add_json(p)


def run_query(args: argparse.Namespace) -> int:
    if args.sets is not None or args.estimator is not None:
        return run_batch_query(args)
    if args.out is not None:
        raise CLIError("--out applies to --sets (or --estimator): one record per set and test")
    with user_errors():
        from runtime.metagrad import sketch_metagradients
        from runtime.query import counted, predict

        sk, source, tests = sketch_and_tests(args)
        w, sel, what = deletion(args, source, sk.docs())
        first_order = None
        if args.hybrid is not False:  # --hybrid computes what is missing; default: stored only
            mgs = sketch_metagradients(sk, tests, compute=bool(args.hybrid), warn=warn)
            first_order = {k: r.g for k, r in mgs.items() if r is not None}
        results = predict(
            sk, tests, w, args.degree, args.groups, warn=warn, first_order=first_order
        )
    if sk.config.get("directions", {}).get("source") == "file":
        warn(
            "this sketch's directions come from a file: the estimator assumes random unit "
            "directions (see `coefficients` for the raw series)"
        )
    for r in results:
        r.update(n_deleted=len(sel), weight=args.weight, degree=args.degree or sk.degree)
        r["warning"] = None
        if not r["reliable"]:
            r["warning"] = (
                f"the prediction for {r['doc']!r} is unreliable: estimated error "
                f"±{r['estimated_error']:.4g} against a predicted change of "
                f"{r['prediction'] - r['c0']:+.4g} when deleting {counted(len(sel), 'documents')} "
                "(use more directions, a lower --degree, or fewer documents)"
            )
            warn(r["warning"])
    if args.json:
        print_json(one_or_list(results))
        return 0
    print(
        f"sketch {args.sketch}: N = {sk.num_docs} docs, T = {sk.steps}, K = {sk.degree}, "
        f"M = {sk.num_directions} directions"
    )
    print(f"deleting {counted(len(sel), what)} (weight {args.weight:g})")
    for r in results:
        print()
        print(f"test document {r['doc']!r} ({r['estimator']} estimator)")
        print(f"  undeleted loss c0   {r['c0']:.6f}")
        for i, (t, e) in enumerate(zip(r["terms"], r["stderr"]["terms"], strict=True)):
            exact = i == 0 and r["estimator"] == "hybrid"
            cell = f"{t:+.6f} (exact)" if exact else fmt_pm(t, e)
            print(f"  term r = {i + 1}          {cell}")
        print(f"  predicted change    {fmt_pm(r['prediction'] - r['c0'], r['stderr']['total'])}")
        print(f"  predicted loss      {r['prediction']:.6f}")
        print(f"  median of means     {r['median_of_means']:.6f} ({r['groups']} groups)")
    return 0


QUERY = Command(
    "query",
    "Predict the test loss of documents if some training documents were deleted.",
    configure_query,
    run_query,
)


# ---------------------------------------------------------------- coefficients
def configure_coefficients(p: argparse.ArgumentParser) -> None:
    add_sketch_and_tests(p)
    add_json(p)


def run_coefficients(args: argparse.Namespace) -> int:
    with user_errors():
        from runtime.query import coefficients

        sk, _, tests = sketch_and_tests(args)
        coefs = coefficients(sk, tests, warn=warn)
    results = [
        {
            "doc": t.label,
            "coefficients": [[[float(c.real), float(c.imag)] for c in row] for row in coefs[t.key]],
            "value_at_1": [[float(s.real), float(s.imag)] for s in coefs[t.key].sum(axis=1)],
        }
        for t in tests
    ]
    if args.json:
        print_json(one_or_list(results))
        return 0
    k = sk.degree
    for t in tests:
        print(f"test document {t.label!r}: c_0 = {coefs[t.key][0, 0].real:.10g}")
        head = "  dir " + "".join(f"{'c_' + str(r):>32}" for r in range(1, k + 1))
        print(head)
        for j, row in enumerate(coefs[t.key]):
            cells = "".join(f"{c.real:>+16.6e}{c.imag:>+15.6e}j" for c in row[1:])
            print(f"  {j:>3} {cells}")
    return 0


COEFFICIENTS = Command(
    "coefficients",
    "Every direction's raw series coefficients c_0..c_K of a test document's loss.",
    configure_coefficients,
    run_coefficients,
)


# ---------------------------------------------------------------- influence
def configure_influence(p: argparse.ArgumentParser) -> None:
    add_sketch_and_tests(p, many=False)
    p.add_argument(
        "--exact-first-order",
        action="store_true",
        help="rank by the exact metagradient g_i (computed once and stored in SKETCH/metagrad) "
        "plus the sketched orders >= 2; error bars from orders >= 2 only",
    )
    p.add_argument(
        "--top",
        type=nonnegative_int,
        default=20,
        metavar="N",
        help="show the N largest effects (0: all; default 20)",
    )
    p.add_argument(
        "--degree",
        type=series_degree,
        metavar="k",
        help="use terms up to degree k (default: all of K)",
    )
    p.add_argument("--groups", type=positive_int, metavar="G", help="median-of-means groups")
    add_json(p)


def run_influence(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    with user_errors():
        from runtime import estimate as est
        from runtime.metagrad import sketch_metagradients
        from runtime.query import coefficients

        sk, _, (test,) = sketch_and_tests(args, many=False)
        if args.degree is not None and args.degree > sk.degree:
            raise ValueError(f"--degree must be between 1 and the sketch's degree {sk.degree}")
        coefs = coefficients(sk, [test], warn=warn)[test.key]
        g = None
        if args.exact_first_order:
            mg = sketch_metagradients(sk, [test], warn=warn)[test.key]
            assert mg is not None
            g = mg.g
        docs = sk.docs()
        t0 = time.perf_counter()
        e = est.influence(coefs, sk.directions(), args.degree, args.groups, first_order=g)
        seconds = time.perf_counter() - t0
    label = test.label
    effect = e.prediction - e.c0
    order = np.argsort(-effect, kind="stable")
    if args.top:
        order = order[: args.top]
    rows = [
        {
            "index": int(i),
            "doc": docs[i],
            "effect": float(effect[i]),
            "stderr": float(e.stderr[i]),
            "prediction": float(e.prediction[i]),
            "terms": [float(t) for t in e.terms[:, i]],
        }
        for i in order
    ]
    if g is not None:
        for r in rows:
            r["first_order_exact"] = float(g[r["index"]])
    estimator = "sketch" if g is None else "hybrid"
    if args.json:
        print_json(
            {
                "doc": label,
                "c0": e.c0,
                "num_docs": len(docs),
                "seconds": seconds,
                "estimator": estimator,
                "influence": rows,
            }
        )
        return 0
    how = "exact first order + sketched orders >= 2" if g is not None else "sketch"
    print(
        f"test document {label!r}: undeleted loss {e.c0:.6f}; effect of deleting one "
        f"document ({len(docs)} evaluated in {seconds * 1e3:.1f} ms, {how}), largest first"
    )
    print(f"  {'index':>6}  {'document':<16} {'effect on loss':>26}")
    for r in rows:
        print(f"  {r['index']:>6}  {r['doc']:<16} {fmt_pm(r['effect'], r['stderr']):>26}")
    return 0


INFLUENCE = Command(
    "influence",
    "Predicted effect of deleting each single training document (all at once), sorted.",
    configure_influence,
    run_influence,
)


# ---------------------------------------------------------------- stability
def configure_stability(p: argparse.ArgumentParser) -> None:
    add_sketch_and_tests(p, many=False)
    p.add_argument("--plot", metavar="FILE.png", help="draw the curves into a PNG picture")
    add_json(p)


def _plot_stability(path: str, doc: str, vals: Any, mean: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    r = np.arange(vals.shape[1])
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in vals:
        ax.plot(r, row, color="0.7", lw=0.8)
    ax.plot(r, mean, color="C0", lw=2.5, marker="o", label="mean over directions")
    ax.set_xlabel("degree r")
    ax.set_ylabel("log2( sqrt(binom(N+r-1, r)) |c_r| )")
    ax.set_title(f"stability of the series for {doc!r}")
    ax.set_xticks(r)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_stability(args: argparse.Namespace) -> int:
    with user_errors():
        from runtime import estimate as est
        from runtime.query import coefficients

        sk, _, (test,) = sketch_and_tests(args, many=False)
        coefs = coefficients(sk, [test], warn=warn)[test.key]
        vals, mean = est.stability(coefs, sk.num_docs)
    label = test.label
    if args.plot:
        write("stability plot", args.plot, lambda: _plot_stability(args.plot, label, vals, mean))
    if args.json:
        print_json(
            {
                "doc": label,
                "num_docs": sk.num_docs,
                "degrees": list(range(vals.shape[1])),
                "mean": [float(v) for v in mean],
                "per_direction": [[float(v) for v in row] for row in vals],
            }
        )
        return 0
    k = vals.shape[1] - 1
    print(f"test document {label!r}: log2(sqrt(binom(N+r-1, r)) |c_r|), N = {sk.num_docs}")
    print("  " + f"{'':>6}" + "".join(f"{'r=' + str(r):>9}" for r in range(k + 1)))
    print("  " + f"{'mean':>6}" + "".join(f"{v:>9.2f}" for v in mean))
    for j, row in enumerate(vals):
        print("  " + f"{j:>6}" + "".join(f"{v:>9.2f}" for v in row))
    return 0


STABILITY = Command(
    "stability",
    "The spec's stability curve log2(sqrt(binom(N+r-1,r)) |c_r|) per direction and averaged.",
    configure_stability,
    run_stability,
)
