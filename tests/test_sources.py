"""The program-source interface (issue 17): microgpt and a user program behind one protocol.

Both sources answer every method of ``runtime.sources.ProgramSource``; each
is reopened from its own sketch as the same training run; and a command
given either one runs the same way (its answer equals the runtime's for
that source), so the CLI needs no microgpt-or-user branches.
"""

from __future__ import annotations

import inspect
import json
import pickle

import numpy as np
import pytest

from runtime.precompute import precompute
from runtime.query import predict
from runtime.retrain import retrain
from runtime.sources import (
    SOURCES,
    MicrogptSource,
    ProgramSource,
    TestRequest,
    TrainingOptions,
    UserProgramSource,
    sketch_source,
    source_class,
)
from runtime.store import Sketch
from tests.cli_helpers import run_json
from tests.conftest import NAMES20
from tests.test_user_program import PROGRAM

KINDS = ("microgpt", "user")
K = 3  # the degree the CLI and user-program tests compile: their modules are cached


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict[str, dict]:
    """Per kind: its source, its command-line options, a test input and a small sketch."""
    d = tmp_path_factory.mktemp("sources")
    docs = d / "docs.txt"
    docs.write_text("".join(x + "\n" for x in NAMES20))
    prog = d / "softmax.py"
    prog.write_text(PROGRAM)
    out = {
        "microgpt": {
            "source": MicrogptSource.from_options(None, TrainingOptions(docs=str(docs))),
            "train": ["--docs", docs],
            "test": ["--doc", "zoe"],
            "request": TestRequest(texts=("zoe",)),
            "other_request": TestRequest(arrays=(("index", 0),)),
        },
        "user": {
            "source": UserProgramSource.from_options(f"{prog}:build", TrainingOptions()),
            "train": ["--program", f"{prog}:build"],
            "test": ["--test-index", 2],
            "request": TestRequest(arrays=(("index", 2),)),
            "other_request": TestRequest(texts=("zoe",)),
        },
    }
    for kind, s in out.items():
        s["sketch"] = d / f"sketch-{kind}"
        precompute(s["sketch"], s["source"], K, num_directions=2, seed=1, progress=False)
    return out


# ---------------------------------------------------------------- the protocol
def test_both_sources_implement_the_whole_interface():
    abstract = ProgramSource.__abstractmethods__
    assert {"key", "program", "manifest_config", "reopen", "test_inputs"} <= abstract
    assert {"microgpt": MicrogptSource, "user": UserProgramSource} == SOURCES
    for kind, cls in SOURCES.items():
        assert cls.kind == kind and not inspect.isabstract(cls)
        for name in abstract:  # each answers in its own way, none inherits a placeholder
            owner = next(c for c in cls.__mro__ if name in vars(c))
            assert owner is cls, (cls.__name__, name)
        assert isinstance(cls.text_documents, bool)


def test_program_names_its_source_kind():
    assert source_class(None) is MicrogptSource
    assert source_class("microgpt") is MicrogptSource
    assert source_class("prog.py:build") is UserProgramSource


@pytest.mark.parametrize("kind", KINDS)
def test_a_source_builds_keys_and_records_its_program(setting, kind):
    source = setting[kind]["source"]
    program = source.program()
    assert program.num_docs == source.num_docs == len(source.docs)
    assert program.num_steps == source.steps
    assert len(source.key) == 64 and int(source.key, 16) >= 0
    again = pickle.loads(pickle.dumps(source))  # what a worker process receives
    assert again.key == source.key and again.docs == source.docs
    config = source.manifest_config(program)
    assert config["program"] == kind
    assert {"hyperparameters", "docs_sha256", "init"} <= set(config)
    assert config["hyperparameters"]["num_params"] == sum(
        np.size(program.init_state[p]) for p in program.params
    )


def test_another_run_has_another_key():
    docs = tuple(NAMES20)
    base = MicrogptSource(docs, 20)
    assert MicrogptSource(docs, 20).key == base.key
    assert MicrogptSource(docs, 21).key != base.key
    assert MicrogptSource(docs, 20, seed=1).key != base.key
    assert MicrogptSource(docs[::-1], 20).key != base.key


def test_a_model_configuration_slots_into_microgpt(setting):
    docs = tuple(NAMES20)
    small = MicrogptSource(docs, 20, model_config={"n_embd": 8})
    assert small.key != MicrogptSource(docs, 20).key
    assert small.model_settings()["n_embd"] == 8
    assert MicrogptSource(docs, 20).model_settings()["n_embd"] == 16
    ref = f"{setting['user']['source'].file}:build"
    with pytest.raises(ValueError, match="--n-embd cannot be combined with --program"):
        UserProgramSource.from_options(ref, TrainingOptions(model_config={"n_embd": 8}))


@pytest.mark.parametrize("kind", KINDS)
def test_test_inputs_of_the_sources_own_kind_only(setting, kind):
    s = setting[kind]
    source = s["source"]
    tests = source.check_tests(source.test_inputs(s["request"]))
    assert len(tests) == 1 and tests[0].key
    with pytest.raises(ValueError, match=r"--doc|--test-npz"):
        source.test_inputs(s["other_request"])
    foreign = {"microgpt": [{"x": np.zeros(4)}], "user": ["zoe"]}[kind]
    with pytest.raises(ValueError, match=r"texts|arrays"):
        source.check_tests(foreign)


@pytest.mark.parametrize("kind", KINDS)
def test_reopened_from_its_sketch_as_the_same_run(setting, kind):
    s = setting[kind]
    source = s["source"]
    sk = Sketch.open(s["sketch"])
    recorded = json.loads(json.dumps(source.manifest_config(source.program())))
    assert {k: sk.config[k] for k in recorded} == recorded
    reopened = sketch_source(sk, full=True)
    assert type(reopened) is type(source) and reopened.key == source.key
    assert sketch_source(sk, full=True) is reopened  # once per opened sketch
    foreign = {"microgpt": "prog.py:build", "user": "microgpt"}[kind]
    with pytest.raises(ValueError):
        sketch_source(Sketch.open(s["sketch"]), foreign)


# ---------------------------------------------------------------- one command, either source
@pytest.mark.parametrize("kind", KINDS)
def test_query_and_retrain_run_the_same_way_for_either_source(capsys, setting, kind):
    s = setting[kind]
    source = s["source"]
    tests = source.check_tests(source.test_inputs(s["request"]))
    w = np.zeros(source.num_docs)
    w[0] = 1.0
    q = run_json(capsys, "query", s["sketch"], *s["test"], "--delete-indices", 0, "--no-hybrid")
    (want,) = predict(Sketch.open(s["sketch"]), tests, w)
    assert q["doc"] == want["doc"] == tests[0].label
    assert q["prediction"] == want["prediction"] and q["n_deleted"] == 1
    r = run_json(capsys, "retrain", *s["train"], "--delete-indices", 0, *s["test"])
    (loss,), _ = retrain(source, w, tests)
    assert r["loss"] == loss and r["steps"] == source.steps
