"""Precompute the shared sketch of experiments 3-5: M = 500 directions, degree K = 3.

Series training of microgpt (N = T = 1000) along Gaussian directions 0..499 of
seed 0, in chunks of 8 directions over two worker processes; each chunk's
parameter series and the test-loss coefficients of "max" go to
``examples/out/sketch_n1000_t1000_k3_seed0_b8/`` as soon as it finishes, so
rerunning resumes.  ``paper_series_curve``, ``paper_accuracy`` and
``paper_error_vs_m`` load it (and compute whatever is missing themselves).

    python -m examples.paper_sketch [--quick] [--workers 2]
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from examples.paper_common import TEST_DOC, make_setting, parse_args, shared_sketch, write_result


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(__doc__, argv)
    t0 = time.perf_counter()
    setting = make_setting(args.quick)
    sk = shared_sketch(setting, args.workers, args.out)
    c = sk.coeffs[TEST_DOC]
    result = {
        "setting": setting.describe(),
        "test_doc": TEST_DOC,
        "M": c.shape[0],
        "K": sk.degree,
        "folder": str(sk.folder),
        "c0": float(c[0, 0].real),
        "mean_abs_coeff": np.mean(np.abs(c), axis=0),
        "seconds_wall": time.perf_counter() - t0,
        "seconds_chunks_this_call": sk.seconds,
        "seconds_per_chunk_mean": float(np.mean(sk.chunk_seconds)) if sk.chunk_seconds else None,
    }
    print(
        f"sketch: M={c.shape[0]}, K={sk.degree}, c0={result['c0']:.6f}, "
        f"wall {result['seconds_wall']:.1f} s"
    )
    write_result(args, "paper_sketch", result)
    return result


if __name__ == "__main__":
    main()
