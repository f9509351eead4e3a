"""The runtime: precompute sketches, store them safely, answer deletion queries.

Modules (import them directly; this package imports nothing on its own):

* ``sources``     program sources: microgpt on a documents file, a user program
                  (--program FILE.py:FN), behind one interface (build the
                  program, its key and manifest record, documents, test inputs,
                  reopening from a sketch).
* ``spec``        the per-process cache of CompiledPrograms, circuit fingerprints,
                  sha256 helpers.
* ``directions``  reproducible complex Gaussian unit directions; --directions-file.
* ``store``       the sketch directory: manifest.json + .npy arrays, opened and
                  checked (refusal of corrupt, edited or mismatched sketches);
                  ``writer`` writes and resumes one.
* ``files``       atomic writes, verified reads, file locks, stat stamps.
* ``integrity``   the manifest's seal (edits named), safe file names, the record
                  of verified files (docs/integrity.md).
* ``derived``     results stored beside a sketch (query caches, metagradients),
                  keyed by the checksums of what they were computed from.
* ``resources``   memory and disk estimates checked before a job allocates.
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
* ``deletion_sets`` many deletion sets: the container, the --sets JSONL format,
                  seeded sampling.
* ``estimators``  the estimator registry (sketch, first-order, hybrid,
                  second-order; a new one is one entry) over blocks of sets.
* ``hessian``     second derivatives in the data weights: the exact diagonal,
                  Hessian-vector products, the row sums; ``second_order`` stores
                  them beside a sketch for the second-order estimator.
* ``batch_query`` many sets x many test inputs from one loaded sketch; auto.
* ``findings``    what evaluate found, stored beside a sketch for auto.
* ``batch_retrain`` ground truth for many sets, parallel and resumable.
* ``metrics``     LDS (Spearman) with a bootstrap interval, MAE, coverage, the
                  split-conformal calibration of an estimator's stderr.
* ``evaluate``    every estimator against retraining; ``evaluate_plot`` its figure.
* ``api``         the Python API: the command line's whole path from Python.
* ``demo``        the README's end-to-end run; ``demo_plot`` its picture.
* ``cli``         the ``circuitsketch`` command line, on top of everything else:
                  one module per command group.
"""
