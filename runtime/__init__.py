"""The runtime: precompute sketches, store them safely, answer deletion queries.

Modules (import them directly; this package imports nothing on its own):

* ``sources``     program sources: microgpt on a documents file, a user program
                  (--program FILE.py:FN), behind one interface (build the
                  program, its key and manifest record, documents, test inputs,
                  reopening from a sketch).
* ``spec``        the per-process cache of CompiledPrograms, circuit fingerprints,
                  sha256 helpers.
* ``directions``  reproducible complex Gaussian unit directions; --directions-file.
* ``store``       the sketch directory: manifest.json + .npy arrays, atomic
                  writes, checksums, resume, refusal of corrupt/mismatched sketches.
* ``parallel``    run independent tasks inline, in local worker processes or on
                  a Dask cluster.
* ``precompute``  the chunked, resumable series training that fills a sketch.
* ``estimate``    the spec's estimator, error bars, median-of-means, influence
                  of every single deletion, the stability curve.
* ``query``       coefficients of test documents (cached per document),
                  deletion sets, predictions.
* ``retrain``     exact ground truth by compiled real training.
* ``metagrad``    the exact first order g = dF/dw by reverse mode through
                  training; stored beside a sketch for the hybrid estimator.
* ``sweep``       its reverse sweep in bounded memory: forward states recomputed
                  from checkpoints a leaf of steps at a time, both in compiled code.
* ``checkpoints`` the sweep's schedules (sqrt, binomial/revolve, k-ary tree) and
                  their choice under a memory budget.
* ``demo``        the README's end-to-end run.
* ``cli``         the ``circuitsketch`` command line, on top of everything else:
                  one module per command group.
"""
