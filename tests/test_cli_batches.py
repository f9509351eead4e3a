"""The command line with microgpt's size and training settings: a minibatched sketch
records its configuration and schedule, every command reads the same run from it, and
a setting that differs is refused by name."""

from __future__ import annotations

import re

import pytest

from circuitsketch.batches import minibatches
from compiler.compiled import CompiledProgram
from runtime.sources import MicrogptSource, TrainingOptions
from runtime.store import Sketch, SketchError
from tests.cli_helpers import one_line_error, run, run_json

DOCS = ("ava", "emma", "leo", "mia", "noah", "christina", "zoe", "ivy", "max")
# a context of 8: one length bucket, so few step circuits to compile ("christina" is cut)
MODEL = ["--n-layer", 1, "--n-embd", 8, "--n-head", 2, "--block-size", 8]
TRAIN = ["--batch-size", 4, "--epochs", 2, "--shuffle-seed", 3, "--weight-decay", 0.1,
         "--warmup", 1, "--lr-schedule", "cosine", "--clip-norm", 1.0]


@pytest.fixture(scope="module")
def docs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("batches") / "docs.txt"
    path.write_text("".join(d + "\n" for d in DOCS))
    return path


@pytest.fixture(scope="module")
def sketch(docs_file):
    from runtime.cli import main

    out = docs_file.parent / "sk"
    # degree 2: the degree of hessian's unit series, which then reuse this compile's code
    rc = main([str(a) for a in ["compile", "--docs", docs_file, *MODEL, *TRAIN, "--degree", 2,
                                "--directions", 2, "--workers", 1, "--out", out,
                                "--no-progress"]])
    assert rc == 0
    return out


def test_manifest_records_the_settings_and_the_schedule(sketch):
    sk = Sketch.open(sketch)
    assert sk.config["model_config"] == {"n_embd": 8, "n_head": 2, "block_size": 8}
    assert sk.config["train_config"] == {"batch_size": 4, "shuffle_seed": 3, "weight_decay": 0.1,
                                         "warmup": 1, "lr_schedule": "cosine", "clip_norm": 1.0}
    assert sk.steps == 2 * 3  # two epochs of ceil(9 / 4) batches
    opt = sk.config["hyperparameters"]["optimizer"]
    assert (opt["name"], opt["weight_decay"], opt["lr_schedule"]) == ("Adam", 0.1, "cosine")
    stored = sk.load("schedule.npy")
    want = minibatches(9, 4, epochs=2, shuffle_seed=3)
    assert [tuple(int(i) for i in row if i >= 0) for row in stored] == want


def test_query_and_retrain_train_the_same_run(capsys, sketch, docs_file):
    """The sketch's c_0 (its undeleted run) is retrain's loss with nothing removed, and both
    equal training the source built from the same options directly."""
    q = run_json(capsys, "coefficients", sketch, "--doc", "olivia")
    c0 = q["coefficients"][0][0][0]
    r = run_json(capsys, "retrain", "--docs", docs_file, *MODEL, *TRAIN, "--doc", "olivia",
                 "--delete-indices", "0", "--weight", "0")
    options = TrainingOptions(
        docs=str(docs_file), epochs=2,
        model_config={"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 8},
        train_config={"batch_size": 4, "shuffle_seed": 3, "weight_decay": 0.1, "warmup": 1,
                      "lr_schedule": "cosine", "clip_norm": 1.0})
    cp = CompiledProgram(MicrogptSource.from_options(None, options).program(), 0)
    direct = cp.output(cp.train()[0], "olivia")
    assert abs(r["loss"] - direct) <= 1e-13 * direct
    assert abs(c0 - direct) <= 1e-12 * direct


def test_a_query_names_the_setting_that_differs(capsys, sketch):
    err = one_line_error(capsys, "query", sketch, "--doc", "olivia", "--delete-indices", "1",
                         "--n-embd", 16)
    assert "--n-embd 16" in err and "n_embd = 8" in err
    err = one_line_error(capsys, "coefficients", sketch, "--doc", "olivia", "--block-size", 16)
    assert "block_size = 8" in err
    rc, _, err = run(capsys, "coefficients", sketch, "--doc", "olivia", "--n-embd", 8)
    assert rc == 0, err  # the sketch's own value is fine


def test_compiling_other_settings_into_it_is_refused(capsys, sketch, docs_file):
    err = one_line_error(capsys, "compile", "--docs", docs_file, *MODEL, *TRAIN[:-2],
                         "--batch-size", 3, "--degree", 2, "--directions", 2, "--out", sketch)
    assert "batch_size: sketch has 4, asked for 3" in err
    assert "clip_norm: sketch has 1.0, asked for the default" in err
    err = one_line_error(capsys, "compile", "--docs", docs_file, *MODEL[:-2], *TRAIN,
                         "--degree", 2, "--directions", 2, "--out", sketch)
    assert "another model configuration (block_size: sketch has 8, asked for the default)" in err


def test_metagrad_of_the_sketch_takes_its_own_settings(capsys, sketch):
    err = one_line_error(capsys, "metagrad", sketch, "--doc", "olivia", "--batch-size", 4)
    assert "--batch-size cannot be combined with SKETCH" in err


def test_hessian_of_the_sketch_trains_its_own_run(capsys, sketch):
    """The second-order data of a minibatched, shuffled AdamW run: its diagonal (from the
    stored unit series) equals the direct passes' over the sketch's own program, bit for bit."""
    import numpy as np

    from runtime import hessian as hs
    from runtime.sources import sketch_source
    from runtime.spec import build_program

    got = run_json(capsys, "hessian", sketch, "--doc", "olivia", "--workers", 1)
    program = build_program(sketch_source(Sketch.open(sketch), full=True))
    diag, _ = hs.hessian_diagonal(program, ["olivia"])
    assert got["diagonal_sum"] == float(np.sum(diag[0]))
    assert got["diagonal_max"] == float(np.max(np.abs(diag[0]))) > 0.0


def test_the_windowed_diagonal_keeps_its_settings(capsys, sketch):
    """``hessian --diagonal windowed`` on a minibatched run: its diagonal is the windowed
    passes' corrected by the sample's exact diagonal (the direct passes here), its settings
    are stored, other settings compute it again, and its estimator answers queries."""
    import json

    import numpy as np

    from runtime import hessian as hs
    from runtime import windowed_diagonal as wd
    from runtime.sources import sketch_source
    from runtime.spec import build_program

    base = ["hessian", sketch, "--doc", "olivia", "--diagonal", "windowed", "--workers", 1]
    got = run_json(capsys, *base, "--window", 2, "--sample", 3)
    program = build_program(sketch_source(Sketch.open(sketch), full=True))
    win, _ = wd.windowed_diagonal(program, ["olivia"], window=2)
    exact, _ = hs.hessian_diagonal(program, ["olivia"])
    sample = wd.sample_docs(program, 3, 0)
    want = wd.corrected(win, exact, sample, wd.trained_docs(program))
    assert got["diagonal"] == "windowed"
    assert got["diagonal_sum"] == pytest.approx(float(np.sum(want[0])), rel=1e-12)
    (meta,) = [json.loads(p.read_text())["meta"]["diagonal"]
               for p in (sketch / "second_order_windowed").glob("*.json")]  # fmt: skip
    assert meta == {"window": 2, "sample": 3, "seed": 0}
    run_json(capsys, *base, "--window", 3, "--sample", 3)
    (meta,) = [json.loads(p.read_text())["meta"]["diagonal"]
               for p in (sketch / "second_order_windowed").glob("*.json")]  # fmt: skip
    assert meta["window"] == 3
    sets = sketch.parent / "sets.jsonl"
    sets.write_text('{"delete": [0, 2]}\n{"delete": [5]}\n')
    out = run_json(capsys, "query", sketch, "--doc", "olivia", "--sets", sets,
                   "--estimator", "second-order-windowed")
    assert [r["estimator"] for r in out] == ["second-order-windowed"] * 2
    assert "--window" in one_line_error(capsys, *base, "--window", 0)


def test_a_changed_schedule_is_refused(sketch):
    """A source drawing another order than the one stored (as a new numpy would)."""
    sk = Sketch.open(sketch)
    other = MicrogptSource(DOCS, sk.steps, model_config=sk.config["model_config"],
                           train_config={**sk.config["train_config"], "shuffle_seed": 4})
    with pytest.raises(SketchError, match=r"stored schedule differs .*\(first at step 0\)"):
        other.check_schedule(sk)


@pytest.mark.parametrize(("extra", "message"), [
    (["--steps", 5, "--epochs", 2], "give --steps or --epochs, not both"),
    (["--warmup", 9], r"--warmup 9 must be less than the number of training steps \(9\)"),
    (["--momentum", 0.5], "--momentum applies to --optimizer sgd"),
    (["--optimizer", "sgd", "--nesterov", "--momentum", 0], "--nesterov needs a --momentum > 0"),
    (["--n-embd", 10], "n_embd = 10 is not a multiple of n_head = 4"),
    (["--batch-size", 0], "expected a positive integer, got 0"),
    (["--lr-schedule", "step"], "invalid choice: 'step'"),
    (["--weight-decay", -1], "expected a number >= 0, got -1"),
])
def test_bad_settings_are_one_line_errors(capsys, docs_file, extra, message):
    err = one_line_error(capsys, "retrain", "--docs", docs_file, *extra, "--doc", "ava",
                         "--delete-indices", "0")
    assert re.search(message, err), err


@pytest.mark.parametrize("option", ["--lr", "--weight-decay", "--momentum", "--clip-norm"])
@pytest.mark.parametrize("command", ["compile", "retrain", "metagrad", "demo"])
def test_an_infinite_rate_is_refused_before_anything_is_made(capsys, docs_file, tmp_path,
                                                             command, option):
    """inf passed the checks and failed only when the manifest was written."""
    out = tmp_path / "out"
    rest = {
        "compile": ["--docs", docs_file, "--degree", 1, "--directions", 2, "--out", out],
        "retrain": ["--docs", docs_file, "--doc", "ava", "--delete-indices", 0, "--out", out],
        "metagrad": ["--docs", docs_file, "--doc", "ava", "--out", out],
        "demo": ["--num-docs", 20, "--directions", 2, "--out", out],
    }[command]
    err = one_line_error(capsys, command, "--optimizer", "sgd", option, "inf", *rest)
    assert f"argument {option}: expected a finite number" in err and "got inf" in err, err
    assert not out.exists()


@pytest.mark.parametrize("key", ["lr", "weight_decay", "momentum", "clip_norm"])
def test_api_training_settings_refuse_infinity(key):
    from runtime.sources.microgpt_settings import normalized_train

    with pytest.raises(ValueError, match=f"--{key.replace('_', '-')} must be a finite number"):
        normalized_train({"optimizer": "sgd", key: float("inf")})


def test_a_user_program_refuses_microgpt_settings(capsys):
    err = one_line_error(capsys, "retrain", "--program", "examples/softmax_regression.py:build",
                         "--batch-size", 4, "--test-index", 0, "--delete-indices", 0)
    assert "--batch-size cannot be combined with --program" in err


def test_inspect_shows_a_batched_step(capsys):
    one = run_json(capsys, "inspect", "--length", 8, "--n-layer", 2)
    out = run_json(capsys, "inspect", "--batch-size", 4, "--length", 8, "--n-layer", 2)
    assert out["source"].startswith("microgpt step circuit, length bucket 8, batches of 4")
    # one circuit for the batch: as many matrix products as for one document, not 4 times
    assert out["ops"]["matmul"] == one["ops"]["matmul"]


def test_inspect_names_a_batch_size_larger_than_the_documents(capsys):
    """It blamed a --length never given, listing no bucket ("have )")."""
    err = one_line_error(capsys, "inspect", "--batch-size", 21)  # 20 documents by default
    assert "--batch-size 21: there are only 20 training documents" in err
    assert "--length" not in err
