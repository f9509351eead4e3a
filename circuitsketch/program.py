"""Training programs: an initial state, a step circuit run in a loop, an output circuit.

The loop is never unrolled into the circuit.  Step s runs ``step_circuits[key]``
on (state, per-step inputs) -> (new state, ``loss``) where the per-step inputs
hold the document's data, the optimizer's scalars (learning rate, bias
corrections) and the data weight ``w`` of the document, the variable a sketch
differentiates along.  The loss of step s is multiplied by ``1 - w[doc]``.
Documents of different sizes may use different step circuits (``key``).

A minibatch step trains on several documents at once: its data arrays have a
leading axis over its documents, ``w`` is the vector of their weights, and its
loss is (1/B) sum_d (1 - w_d) loss_d over its B documents (B stays the batch's
size when documents are down-weighted, as one document's loss keeps its scale).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from circuitsketch import interpret
from circuitsketch.grad import gradients
from circuitsketch.ir import Circuit
from circuitsketch.nn import clip_by_global_norm
from circuitsketch.tracing import Input, Traced, input_value, lift

WEIGHT = "w"
LOSS = "loss"


@dataclass(frozen=True)
class Step:
    """One training step: its circuit's key, its document(s) and their data arrays.

    ``doc`` is one document's index (a scalar weight ``w``) or, for a minibatch
    step, the tuple of its documents' indices (``w`` a vector over them, and each
    data array has a leading axis over them).
    """

    key: Hashable
    doc: int | tuple[int, ...]
    data: Mapping[str, np.ndarray]

    @property
    def docs(self) -> tuple[int, ...]:
        """The indices of the documents the step trains on."""
        return self.doc if isinstance(self.doc, tuple) else (self.doc,)

    def weight(self, w: np.ndarray) -> Any:
        """The step's data-weight input from the weights of all documents (N, ...)."""
        return w[list(self.doc)] if isinstance(self.doc, tuple) else w[self.doc]


@dataclass
class Program:
    """Everything needed to run (or sketch) a training run and evaluate its output."""

    name: str
    init_state: dict[str, np.ndarray]
    params: tuple[str, ...]
    step_circuits: dict[Hashable, Circuit]
    output_circuits: dict[Hashable, Circuit]
    steps: list[Step]
    num_docs: int
    optimizer: Any
    encode_test: Callable[[Any], tuple[Hashable, dict[str, np.ndarray]]]
    meta: dict[str, Any] = field(default_factory=dict)
    # each document's own arrays, when steps hold them otherwise (minibatches)
    documents: Sequence[Mapping[str, np.ndarray]] | None = None

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def step_inputs(self, s: int) -> tuple[Circuit, dict[str, Any]]:
        """The circuit of step s and its non-state, non-weight inputs."""
        step = self.steps[s]
        inputs = dict(step.data)
        inputs.update(self.optimizer.schedule(s, self.num_steps))
        return self.step_circuits[step.key], inputs


def build_step_circuit(
    loss_fn: Callable[..., Traced],
    param_shapes: Mapping[str, tuple[int, ...]],
    data_inputs: Mapping[str, Input],
    optimizer: Any,
    scope: str = "model",
    batch: int | None = None,
) -> Circuit:
    """Trace one training step: weighted loss, its gradient, the optimizer update.

    batch: None for one document (``loss_fn`` returns its scalar loss, ``w`` is a
    scalar); B for a minibatch (``loss_fn`` returns the (B,) losses of its
    documents, ``w`` is (B,), and the step's loss is their weighted mean).
    """
    reserved = {WEIGHT, *optimizer.schedule(0, 1)}
    taken = [*param_shapes, *data_inputs]
    clash = sorted(reserved.intersection(taken))
    if clash:
        raise ValueError(f"name {clash[0]!r} is reserved for the step's own inputs "
                         f"({', '.join(sorted(reserved))}); rename that parameter or input")
    c = Circuit()
    params = {n: input_value(c, n, Input(s)) for n, s in param_shapes.items()}
    bufs = {
        n: tuple(input_value(c, b, Input(s)) for b in optimizer.buffers(n))
        for n, s in param_shapes.items()
    }
    data = {k: input_value(c, k, spec) for k, spec in data_inputs.items()}
    w = input_value(c, WEIGHT, Input(() if batch is None else (int(batch),)))
    hyper = {k: input_value(c, k, Input(())) for k in optimizer.schedule(0, 1)}
    with c.scope(scope):
        loss = lift(c, loss_fn(params, **data))
    if loss.shape != w.shape:
        what = "a scalar" if batch is None else f"one loss per document, shape ({batch},)"
        raise ValueError(f"the loss function returned shape {loss.shape}, expected {what}")
    with c.scope("weight"):
        weighted = loss * (1.0 - w) if batch is None else (loss * (1.0 - w)).sum() / float(batch)
    with c.scope("backward"):
        grads = gradients(weighted, list(params.values()))
    if getattr(optimizer, "clip_norm", None) is not None:
        with c.scope("clip"):
            grads = clip_by_global_norm(grads, optimizer.clip_norm)
    with c.scope(type(optimizer).__name__.lower()):
        for (name, p), g in zip(params.items(), grads, strict=True):
            new_p, new_bufs = optimizer.update(p, g, bufs[name], hyper)
            c.set_output(name, lift(c, new_p).id)
            for b, nb in zip(optimizer.buffers(name), new_bufs, strict=True):
                c.set_output(b, nb.id)
    c.set_output(LOSS, weighted.id)
    c.verify()
    return c


def build_output_circuit(
    out_fn: Callable[..., Traced],
    param_shapes: Mapping[str, tuple[int, ...]],
    test_inputs: Mapping[str, Input],
    scope: str = "model",
) -> Circuit:
    """Trace the output of the trained model on a test input (e.g. its loss)."""
    c = Circuit()
    params = {n: input_value(c, n, Input(s)) for n, s in param_shapes.items()}
    data = {k: input_value(c, k, spec) for k, spec in test_inputs.items()}
    with c.scope(scope):
        out = out_fn(params, **data)
    c.set_output(LOSS, lift(c, out).id)
    c.verify()
    return c


def _check_weights(program: Program, weights) -> np.ndarray:
    w = np.zeros(program.num_docs) if weights is None else np.asarray(weights)
    if w.shape != (program.num_docs,):
        raise ValueError(f"weights: shape {w.shape}, expected ({program.num_docs},)")
    return w


def train(program: Program, weights=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Real training through the IR interpreter: final state and per-step losses."""
    w = _check_weights(program, weights).astype(np.float64)
    state = {k: v.copy() for k, v in program.init_state.items()}
    losses = np.empty(program.num_steps)
    for s in range(program.num_steps):
        circuit, inputs = program.step_inputs(s)
        out = interpret.evaluate(circuit, {**state, **inputs, WEIGHT: program.steps[s].weight(w)})
        losses[s] = out.pop(LOSS)
        state = out
    return state, losses


def train_series(
    program: Program, direction, degree: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Training with w = z * direction in degree-K series arithmetic (interpreter).

    Returns the series-valued final state (arrays of shape (K+1, *shape)) and
    the per-step loss series (T, K+1).
    """
    psi = _check_weights(program, direction).astype(np.complex128)
    state: dict[str, np.ndarray] = dict(program.init_state)
    losses = np.empty((program.num_steps, degree + 1), dtype=np.complex128)
    for s in range(program.num_steps):
        circuit, inputs = program.step_inputs(s)
        order1 = program.steps[s].weight(psi)
        w = np.zeros((degree + 1, *np.shape(order1)), dtype=np.complex128)
        if degree >= 1:
            w[1] = order1
        out = interpret.evaluate_series(circuit, {**state, **inputs, WEIGHT: w}, degree)
        losses[s] = out.pop(LOSS)
        state = out
    return state, losses


def output(program: Program, state: Mapping[str, np.ndarray], test: Any, degree: int | None = None):
    """The program's output (test loss) for final parameters `state` on one test input."""
    key, inputs = program.encode_test(test)
    circuit = program.output_circuits[key]
    params = {p: state[p] for p in program.params}
    if degree is None:
        return interpret.evaluate(circuit, {**params, **inputs})[LOSS]
    return interpret.evaluate_series(circuit, {**params, **inputs}, degree)[LOSS]


def doc_signature(data: Mapping[str, Any]) -> tuple:
    """Which step circuit a document needs: the names, shapes and dtypes of its arrays."""
    from circuitsketch.ir import ir_dtype

    return tuple(sorted((k, np.shape(v), ir_dtype(np.asarray(v))) for k, v in data.items()))


def per_document(program: Program, per_step: np.ndarray) -> np.ndarray:
    """Per-step values of each step's documents summed into a vector over documents (N,).

    per_step: (T,) one value per step (one-document steps), or (T, W) with row s
    holding the values of step s's documents in order (zeros after them).
    """
    per_step = np.asarray(per_step)
    docs, vals = [], []
    for s, st in enumerate(program.steps):
        row = per_step[s] if per_step.ndim == 2 else per_step[s : s + 1]
        docs.extend(st.docs)
        vals.extend(row[: len(st.docs)])
    out = np.zeros(program.num_docs, dtype=per_step.dtype)
    np.add.at(out, np.asarray(docs, np.int64), np.asarray(vals, per_step.dtype))
    return out


def document_data(program: Program, index: int) -> dict[str, np.ndarray] | None:
    """The data arrays of training document `index` (None when no step trains on it)."""
    if not any(index in st.docs for st in program.steps):
        return None
    if program.documents is not None:
        return {k: np.asarray(v) for k, v in program.documents[index].items()}
    st = next(st for st in program.steps if st.doc == index)  # one-document steps
    return {k: np.asarray(v) for k, v in st.data.items()}

def training_program(
    *,
    name: str,
    params: Mapping[str, np.ndarray],
    loss: Callable[..., Traced],
    docs: list[Mapping[str, Any]],
    optimizer: Any,
    steps: int | None = None,
    output: Callable[..., Traced] | None = None,
    batch_size: int = 1,
    epochs: int | None = None,
    shuffle_seed: int | None = None,
    batch_loss: Callable[..., Traced] | None = None,
) -> Program:
    """A sketchable training program from a traced loss, documents and an optimizer.

    ``loss(params, **doc)`` returns the scalar loss of one document, where
    ``params`` maps names to traced arrays and ``doc`` holds the document's
    arrays (floats, or ints such as labels).  Step s trains on document
    s mod N with its loss times (1 - w[doc]).  ``output(params, **test)``
    (default: ``loss``) is what queries ask about; a test input is a dict of
    arrays shaped like some training document's.

    Minibatches: with ``batch_size`` B > 1 a step trains on B documents with
    loss (1/B) sum_d (1 - w_d) loss_d (the last batch of an epoch may be
    smaller); the documents of a batch must have arrays of the same shapes.
    ``batch_loss(params, **batch)``, given arrays with a leading axis over the
    batch's documents, returns their (B,) losses as batched tensor work; without
    it ``loss`` is traced once per document of the batch.  ``epochs`` (instead of
    ``steps``) and ``shuffle_seed`` choose the order (``circuitsketch.batches``).

    Example::

        import numpy as np, circuitsketch as cs
        X = np.random.default_rng(0).normal(size=(20, 3)); y = X @ [1.0, -2.0, 0.5]
        prog = cs.training_program(
            name="linreg", params={"theta": np.zeros(3)},
            loss=lambda p, x, t: ((p["theta"] * x).sum() - t) ** 2,
            docs=[{"x": X[i], "t": y[i]} for i in range(20)],
            optimizer=cs.SGD(lr=0.05, momentum=0.0))
    """
    from circuitsketch.batches import minibatches, stack_documents

    if not docs:
        raise ValueError("training_program: no documents")
    if steps is not None and int(steps) < 1:
        raise ValueError(f"training_program: steps must be >= 1, got {int(steps)}")
    try:
        batches = minibatches(len(docs), batch_size, steps, epochs, shuffle_seed)
    except ValueError as e:
        raise ValueError(f"training_program: {e}") from None
    shapes = {k: tuple(np.shape(v)) for k, v in params.items()}
    keys = [doc_signature(d) for d in docs]
    specs = {key: {k: Input(shape, dtype) for k, shape, dtype in key}
             for key in dict.fromkeys(keys)}
    output_circuits = {key: build_output_circuit(output or loss, shapes, spec)
                       for key, spec in specs.items()}
    if batch_size == 1:
        step_circuits = {key: build_step_circuit(loss, shapes, spec, optimizer)
                         for key, spec in specs.items()}
        sched = [Step(keys[b[0]], b[0], {k: np.asarray(v) for k, v in docs[b[0]].items()})
                 for b in batches]
    else:
        sched, step_circuits = _minibatch_steps(
            batches, docs, keys, specs, loss, batch_loss, shapes, optimizer, stack_documents)

    def encode_test(test: Mapping[str, Any]):
        key = doc_signature(test)
        if key not in output_circuits:
            raise ValueError(f"test input with arrays {[(k, s, d) for k, s, d in key]} matches "
                             "no training document's names, shapes and dtypes")
        return key, {k: np.asarray(v) for k, v in test.items()}

    state = {**{k: np.array(v, dtype=np.float64) for k, v in params.items()},
             **_init_buffers(optimizer, params)}
    return Program(name=name, init_state=state, params=tuple(shapes), step_circuits=step_circuits,
                   output_circuits=output_circuits, steps=sched, num_docs=len(docs),
                   optimizer=optimizer, encode_test=encode_test,
                   documents=None if batch_size == 1 else
                   [{k: np.asarray(v) for k, v in d.items()} for d in docs])


def _minibatch_steps(batches, docs, keys, specs, loss, batch_loss, shapes, optimizer, stack):
    """Steps of a minibatch schedule and their circuits, keyed (batch size, signature).

    With `batch_loss` a step's arrays are stacked (a leading axis over its
    documents); without it each document keeps its own arrays, named
    ``name[j]`` for the j-th document of the batch, and `loss` is traced on each.
    """
    sched, circuits = [], {}
    for b in batches:
        sig = keys[b[0]]
        other = next((i for i in b if keys[i] != sig), None)
        if other is not None:
            raise ValueError(
                f"training_program: documents {b[0]} and {other} share a minibatch but their "
                "arrays differ in names, shapes or dtypes; pad them to one shape")
        key = (len(b), sig)
        if batch_loss is not None:
            data = stack([docs[i] for i in b])
        else:
            data = {f"{k}[{j}]": np.asarray(docs[i][k]) for j, i in enumerate(b) for k in docs[i]}
        if key not in circuits:
            if batch_loss is not None:
                fn, data_specs = batch_loss, {k: Input((len(b), *spec.shape), spec.dtype)
                                              for k, spec in specs[sig].items()}
            else:
                fn = _losses_one_by_one(loss, len(b), list(specs[sig]))
                data_specs = {f"{k}[{j}]": spec for j in range(len(b))
                              for k, spec in specs[sig].items()}
            circuits[key] = build_step_circuit(fn, shapes, data_specs, optimizer, batch=len(b))
        sched.append(Step(key, tuple(b), data))
    return sched, circuits


def _losses_one_by_one(loss: Callable[..., Traced], size: int, names: list[str]
                       ) -> Callable[..., Traced]:
    """A batch's (B,) losses: the one-document loss traced on each document's arrays."""
    from circuitsketch.ops.structure import stack

    def batch_loss(params, **batch):
        c = next(iter(params.values())).circuit
        rows = [lift(c, loss(params, **{k: batch[f"{k}[{j}]"] for k in names}))
                for j in range(size)]
        return stack(rows)

    return batch_loss

def _init_buffers(optimizer: Any, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from circuitsketch.optim import init_buffers

    return init_buffers(optimizer, {k: np.asarray(v, np.float64) for k, v in params.items()})
