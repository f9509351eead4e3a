"""microgpt through the IR interpreter against the independent scalar oracle (tests/oracle).

The interpreter runs the traced step circuits (forward, reverse-mode backward,
Adam) tensor by tensor; the oracle implements the spec one Python float at a
time.  Agreement to ~1e-12 over 20 steps checks the model, the gradient
transformation, the optimizer, the data weighting and the padding at once.
Errors are relative to each tensor's scale (max |oracle|).
"""

from __future__ import annotations

import numpy as np
import pytest

from circuitsketch import program as P
from circuitsketch.models import microgpt
from tests.conftest import (
    BUCKETS,
    DOCS,
    HELD_OUT,
    HELD_OUT_LONG,
    WEIGHTS,
    T,
    assert_rel,
)
from tests.oracle import microgpt as OM


@pytest.fixture(scope="module")
def interp_run(program):
    return P.train(program, WEIGHTS)


def test_setting_uses_both_buckets(program):
    keys = [st.key for st in program.steps]
    assert sorted(set(keys)) == list(BUCKETS), f"steps use buckets {sorted(set(keys))}"
    assert program.num_steps == T and program.num_docs == len(DOCS)
    assert [st.doc for st in program.steps] == [s % len(DOCS) for s in range(T)]


def test_interpreter_training_matches_oracle(interp_run, oracle_real):
    state, losses = interp_run
    o_params, o_losses, o_m, o_v = oracle_real
    assert losses.shape == (T,)
    assert_rel(losses, o_losses, 1e-12, "per-step losses vs oracle (1e-12)")
    for s in range(T):  # each step on its own too, so an early small error is not masked
        assert_rel(losses[s], o_losses[s], 1e-12, f"loss of step {s} vs oracle (1e-12)")
    # the deleted document (weight 1) contributes a zero loss
    deleted = [s for s in range(T) if WEIGHTS[s % len(DOCS)] == 1.0]
    assert deleted and all(losses[s] == 0.0 for s in deleted)
    for name in o_params:
        assert_rel(state[name], o_params[name], 1e-12, f"final {name} vs oracle (1e-12)")
        assert_rel(state[f"adam_m.{name}"], o_m[name], 1e-12, f"adam m of {name} (1e-12)")
        assert_rel(state[f"adam_v.{name}"], o_v[name], 1e-12, f"adam v of {name} (1e-12)")


def test_training_moves_parameters(interp_run, init_params):
    state, _ = interp_run
    for name, p0 in init_params.items():
        assert state[name].shape == p0.shape
        assert not np.allclose(state[name], p0), f"{name} did not move in training"


@pytest.mark.parametrize("doc", [HELD_OUT, HELD_OUT_LONG])
def test_held_out_loss_matches_oracle(interp_run, oracle_real, chars, program, doc):
    state, _ = interp_run
    key, _ = program.encode_test(doc)
    assert key == (16 if len(doc) + 1 > 8 else 8)
    got = P.output(program, state, doc)
    want = OM.test_loss(oracle_real[0], OM.tokenize(doc, chars))
    assert_rel(got, want, 1e-12, f"held-out loss of {doc!r} vs oracle (1e-12)")


def test_padding_does_not_change_the_loss(init_params, chars):
    """The same document in the 8 and the 16 bucket (and unpadded) gives the same loss."""
    params = {n: v.copy() for n, v in init_params.items()}
    wide = microgpt.build(["ava"], steps=1, init=params, buckets=(16,))
    narrow = microgpt.build(["ava"], steps=1, init=params, buckets=(4, 8, 16))
    for doc in ("ava", "abc", "abcdefg", "christina"):
        want = OM.test_loss(params, OM.tokenize(doc, chars))
        for prog in (wide, narrow):
            got = P.output(prog, prog.init_state, doc)
            assert_rel(got, want, 1e-13, f"loss of {doc!r} in bucket {prog.encode_test(doc)[0]}")
    # "abc" has 4 positions: exactly fills bucket 4 (no padding) and is padded in 8 and 16
    assert narrow.encode_test("abc")[0] == 4 and wide.encode_test("abc")[0] == 16


def test_block_size_truncation(init_params, chars):
    """A document longer than block_size uses only its first 16 positions (spec)."""
    doc = "abcdefghijklmnopqrstuv"  # 23 positions -> 16
    prog = microgpt.build(["ava"], steps=1, init=init_params)
    got = P.output(prog, prog.init_state, doc)
    want = OM.test_loss(init_params, OM.tokenize(doc, chars))
    assert_rel(got, want, 1e-13, "loss of a 22-letter document (1e-13)")


def test_padded_doc_training_step_matches_oracle(init_params, chars):
    """One step on a 16-bucket document only (10 of 16 positions real)."""
    prog = microgpt.build(["christina"], steps=2, init=init_params)
    assert [st.key for st in prog.steps] == [16, 16]
    state, losses = P.train(prog)
    final, o_losses, _, _ = OM.train(init_params, [OM.tokenize("christina", chars)], 2, [0.0])
    assert_rel(losses, np.array(o_losses), 1e-12, "losses (1e-12)")
    for name, arr in OM.to_array(final).items():
        assert_rel(state[name], arr, 1e-12, f"{name} after 2 padded steps (1e-12)")


def test_init_params_follow_the_spec():
    p = microgpt.init_params(0)
    assert list(p) == list(OM.PARAM_SHAPES), "names / flattening order differ from the spec"
    assert {n: a.shape for n, a in p.items()} == OM.PARAM_SHAPES
    flat = np.concatenate([a.ravel() for a in p.values()])
    assert flat.size == 4192
    assert abs(flat.std() - 0.08) < 0.005 and abs(flat.mean()) < 0.005
    again = microgpt.init_params(0)
    assert all(np.array_equal(p[n], again[n]) for n in p)
    assert not np.array_equal(p["wte"], microgpt.init_params(1)["wte"])


def test_tokenizer_matches_spec(chars):
    tok = microgpt.Tokenizer.from_corpus()
    assert tok.chars == chars and len(chars) == 26
    assert tok.bos == 26 and tok.vocab_size == 27
    assert tok.encode("emma") == OM.tokenize("emma", chars)


def test_read_docs_strips_and_skips_blanks(tmp_path):
    f = tmp_path / "docs.txt"
    f.write_text("  ava \n\nemma\n   \nleo\n", encoding="utf-8")
    assert microgpt.read_docs(f) == ["ava", "emma", "leo"]
    with pytest.raises(ValueError, match="does not exist"):
        microgpt.read_docs(tmp_path / "missing.txt")


# ---------------------------------------------------------------- bad input
def test_tokenizer_rejects_unknown_character():
    tok = microgpt.Tokenizer.from_corpus()
    with pytest.raises(ValueError, match="'3'") as info:
        tok.encode("ab3")
    assert "position 2" in str(info.value)
    with pytest.raises(ValueError, match="empty"):
        tok.encode("")


def _save(path, params):
    np.savez(path, **params)
    return path


def test_load_params_round_trip(tmp_path):
    p = microgpt.init_params(5)
    got = microgpt.load_params(_save(tmp_path / "ok.npz", p))
    assert list(got) == list(p) and all(np.array_equal(got[n], p[n]) for n in p)


def test_load_params_missing_key(tmp_path):
    p = microgpt.init_params(5)
    del p["layer0.attn_wk"]
    with pytest.raises(ValueError, match=r"missing key 'layer0\.attn_wk'"):
        microgpt.load_params(_save(tmp_path / "missing.npz", p))


def test_load_params_wrong_shape(tmp_path):
    p = microgpt.init_params(5)
    p["wpe"] = np.zeros((8, 16))
    with pytest.raises(ValueError, match=r"'wpe' has shape \(8, 16\), expected \(16, 16\)"):
        microgpt.load_params(_save(tmp_path / "shape.npz", p))


def test_load_params_other_defects(tmp_path):
    p = microgpt.init_params(5)
    bad = dict(p, lm_head=np.full((27, 16), np.nan))
    with pytest.raises(ValueError, match="'lm_head' must hold finite floats"):
        microgpt.load_params(_save(tmp_path / "nan.npz", bad))
    extra = dict(p, bias=np.zeros(3))
    with pytest.raises(ValueError, match="unexpected key 'bias'"):
        microgpt.load_params(_save(tmp_path / "extra.npz", extra))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"not a readable \.npz"):
        microgpt.load_params(junk)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"PK\x03\x04garbage", "not a zip file"),  # zipfile.BadZipFile
        (b"", "No data left"),  # EOFError
        (None, r"one array \(\.npy\)"),  # np.load gives an ndarray: TypeError in `with`
    ],
)
def test_load_params_broken_archive_is_a_value_error(tmp_path, content, reason):
    """A broken --init file is a ValueError (one CLI line), never another exception."""
    f = tmp_path / "init.npz"
    if content is None:
        with open(f, "wb") as out:
            np.save(out, np.zeros(3))
    else:
        f.write_bytes(content)
    with pytest.raises(ValueError, match=rf"not a readable \.npz: .*{reason}"):
        microgpt.load_params(f)
