"""Directions and sketch storage, on synthetic arrays (no compiled code)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.directions import (
    DirectionsError,
    gaussian_direction,
    gaussian_directions,
    load_directions_file,
)
from runtime.store import (
    MANIFEST,
    VERSION,
    Sketch,
    SketchError,
    SketchWriter,
    atomic_save,
    chunk_name,
    circuit_differences,
    load_verified,
)


# ---------------------------------------------------------------- directions
def test_direction_depends_only_on_seed_and_index():
    a = gaussian_direction(7, 3, 50)
    assert a.dtype == np.complex128 and a.shape == (50,)
    assert np.linalg.norm(a) == pytest.approx(1.0, rel=1e-15)
    np.testing.assert_array_equal(a, gaussian_direction(7, 3, 50))
    rows = gaussian_directions(7, 1, 6, 50)
    np.testing.assert_array_equal(rows[2], a)  # row 2 of [1, 6) is direction 3
    np.testing.assert_array_equal(gaussian_directions(7, 0, 6, 50)[3], a)
    assert not np.allclose(gaussian_direction(8, 3, 50), a)
    assert not np.allclose(gaussian_direction(7, 4, 50), a)
    # real and imaginary parts both carry signal
    assert np.abs(a.real).sum() > 0.3 and np.abs(a.imag).sum() > 0.3


# (seed, j, N) -> first entries and last entry of direction j, computed once outside the
# project from the documented definition: x = np.random.default_rng([seed, j]).normal(
# size=2N) in one draw, psi = (x[:N] + 1j x[N:]) / sqrt(math.fsum(x**2)); numpy 2.4.6.
PINNED_DIRECTIONS = {
    (0, 0, 20): (
        [0.02518198456761956 - 0.02574367459559755j, -0.026458735217191633 + 0.27368330166251653j,
         0.12826759676368826 - 0.13322908252710325j],
        0.2088006793636511 + 0.2991131306753723j,
    ),
    (0, 7, 20): (
        [-0.09844931794183745 - 0.2574258926304564j, 0.12078904776075687 - 0.19869193656240303j,
         0.07598622132720287 + 0.2368269131772744j],
        0.015996376449192672 + 0.038817351092970236j,
    ),
    (7, 3, 50): (
        [-0.16171141044757398 - 0.16487718860775083j, 0.006195324473938239 + 0.0728990267732183j,
         0.14496618873426884 - 0.13311966497282957j],
        0.050383121923403364 + 0.08545894428594536j,
    ),
    (12345, 2, 3): (
        [-0.7129504890191887 - 0.037320446337797804j, 0.07011188650821969 + 0.2350710355683017j,
         -0.48563442579910043 + 0.44078784077867905j],
        -0.48563442579910043 + 0.44078784077867905j,
    ),
}  # fmt: skip


@pytest.mark.parametrize(("seed", "j", "n"), list(PINNED_DIRECTIONS), ids=str)
def test_direction_entries_are_pinned(seed, j, n):
    """Direction j of a seed is regenerated from (seed, j) by every worker and on every
    resume, and the paper experiments name their directions by seed: a change in how they
    are drawn (the rng, the order of real and imaginary parts, the normalisation) changes
    what a seed means, so it must fail here.  rtol 1e-14 allows the norm's last bits only."""
    first, last = PINNED_DIRECTIONS[(seed, j, n)]
    psi = gaussian_direction(seed, j, n)
    np.testing.assert_allclose(psi[: len(first)], first, rtol=1e-14, atol=0)
    np.testing.assert_allclose(psi[-1], last, rtol=1e-14, atol=0)
    np.testing.assert_allclose(gaussian_directions(seed, j, j + 1, n)[0, :3], first, rtol=1e-14)


def test_directions_file_used_exactly_as_given(tmp_path):
    rows = np.array([[1, 0, 1], [0.5 + 2j, -1j, 3]], np.complex128)  # not normalised
    f = tmp_path / "d.npy"
    np.save(f, rows)
    np.testing.assert_array_equal(load_directions_file(f, 3), rows)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: np.ones((2, 4), np.complex128), r"shape \(2, 4\), expected \(M, 3\)"),
        (lambda: np.ones(3, np.complex128), r"shape \(3,\)"),
        (lambda: np.ones((0, 3), np.complex128), r"shape \(0, 3\)"),
        (lambda: np.ones((2, 3)), "dtype float64, expected complex128"),
        (lambda: np.ones((2, 3), np.complex64), "dtype complex64"),
        (lambda: np.array([[1, np.nan, 0]], np.complex128), "non-finite value at row 0, column 1"),
        (lambda: np.array([[1, 1, 1], [0, 0, 0]], np.complex128), "row 1 is all zeros"),
    ],
)
def test_bad_directions_files(tmp_path, make, message):
    f = tmp_path / "bad.npy"
    np.save(f, make())
    with pytest.raises(DirectionsError, match=message) as e:
        load_directions_file(f, 3)
    assert "bad.npy" in str(e.value)


def test_directions_file_never_unpickles(tmp_path):
    f = tmp_path / "obj.npy"
    np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DirectionsError, match="safely"):
        load_directions_file(f, 3)
    with pytest.raises(DirectionsError, match="does not exist"):
        load_directions_file(tmp_path / "nope.npy", 3)
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(DirectionsError, match=r"junk\.npy"):
        load_directions_file(tmp_path / "junk.npy", 3)


# ---------------------------------------------------------------- files
def test_atomic_save_and_verified_load(tmp_path):
    arr = np.arange(12.0).reshape(3, 4) + 1j
    entry = atomic_save(tmp_path / "a.npy", arr)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed
    np.testing.assert_array_equal(load_verified(tmp_path / "a.npy", entry, "a"), arr)
    data = bytearray((tmp_path / "a.npy").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "a.npy").write_bytes(bytes(data))
    with pytest.raises(SketchError, match="a: corrupt"):
        load_verified(tmp_path / "a.npy", entry, "a")
    (tmp_path / "a.npy").write_bytes(bytes(data[:-8]))
    with pytest.raises(SketchError, match="truncated"):
        load_verified(tmp_path / "a.npy", entry, "a")
    with pytest.raises(ValueError):  # object arrays are refused, never pickled
        atomic_save(tmp_path / "o.npy", np.array([None, {}], dtype=object))


CONFIG = {
    "program": "microgpt",
    "degree": 2,
    "num_directions": 5,
    "num_docs": 3,
    "steps": 3,
    "seed": 0,
    "chunk_size": 2,
    "docs_sha256": "aaa",
    "init": {"seed": 0},
    "directions": {"source": "seed", "seed": 0},
    "fingerprints": {"step:8": "s8", "step:16": "s16", "output:8": "o8"},
}


def _write_sketch(path, config=CONFIG, chunks=(0, 1, 2), finish=True):
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=6)
    with SketchWriter(path, config) as w:
        w.ensure("directions.npy", gaussian_directions(0, 0, 5, 3))
        w.ensure("docs.npy", np.array(["ava", "bo", "cy"]))
        for c in chunks:
            b = 2 if c < 2 else 1
            w.add_chunk(c, np.full((b, 2, 6), c + 1j), p0, np.arange(3.0))
        if finish:
            w.finish()


def test_writer_and_reader_roundtrip(tmp_path):
    _write_sketch(tmp_path / "sk")
    sk = Sketch.open(tmp_path / "sk")
    assert sk.complete and sk.num_chunks == 3 and sk.chunk_bounds(2) == (4, 5)
    assert sk.docs() == ["ava", "bo", "cy"]
    assert sk.chunk(1).shape == (2, 2, 6) and sk.chunk(2).shape == (1, 2, 6)
    sk.verify_all()
    manifest = json.loads((tmp_path / "sk" / MANIFEST).read_text())
    assert set(manifest["files"]) == {
        "directions.npy",
        "docs.npy",
        "params0.npy",
        "losses.npy",
        *(chunk_name(c) for c in range(3)),
    }
    for entry in manifest["files"].values():
        assert len(entry["sha256"]) == 64 and entry["bytes"] > 0


def test_incomplete_sketch_is_refused_then_resumed(tmp_path):
    _write_sketch(tmp_path / "sk", chunks=(0, 2), finish=False)
    with pytest.raises(SketchError, match=r"incomplete \(2 of 3 chunks\)"):
        Sketch.open(tmp_path / "sk")
    with SketchWriter(tmp_path / "sk", CONFIG) as w:
        assert w.done_chunks() == {0, 2}
    _write_sketch(tmp_path / "sk", chunks=(1,))
    assert Sketch.open(tmp_path / "sk").complete


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("docs_sha256", "bbb", "another documents file"),
        ("init", {"sha256": "ccc"}, "another init"),
        ("degree", 3, "another degree"),
        ("fingerprints", {**CONFIG["fingerprints"], "step:8": "t8"}, "step circuit for bucket 8"),
    ],
)
def test_resume_with_another_configuration_is_refused(tmp_path, key, value, words):
    _write_sketch(tmp_path / "sk")
    with pytest.raises(SketchError, match=words) as e:
        SketchWriter(tmp_path / "sk", {**CONFIG, key: value}).open()
    assert "sk" in str(e.value) and key in str(e.value)


def test_resume_recomputes_a_corrupt_chunk_and_cleans_temporaries(tmp_path):
    _write_sketch(tmp_path / "sk")
    f = tmp_path / "sk" / chunk_name(1)
    f.write_bytes(f.read_bytes()[:-16])
    (tmp_path / "sk" / "chunks" / ".phi_00001.npy.abc.tmp").write_bytes(b"half")
    warnings = []
    with SketchWriter(tmp_path / "sk", CONFIG, warn=warnings.append) as w:
        assert w.done_chunks() == {0, 2}
    assert any("phi_00001.npy" in m and "recomputed" in m for m in warnings)
    assert not list((tmp_path / "sk" / "chunks").glob(".*.tmp"))


def test_second_writer_is_locked_out(tmp_path):
    with SketchWriter(tmp_path / "sk", CONFIG), pytest.raises(SketchError, match="another"):
        SketchWriter(tmp_path / "sk", CONFIG).open()


def test_non_sketch_directories_are_refused(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    with pytest.raises(SketchError, match="non-empty directory"):
        SketchWriter(tmp_path / "full", CONFIG).open()
    with pytest.raises(SketchError, match="does not exist"):
        Sketch.open(tmp_path / "missing")
    with pytest.raises(SketchError, match=r"manifest\.json is missing"):
        Sketch.open(tmp_path / "full")
    _write_sketch(tmp_path / "sk")
    (tmp_path / "sk" / MANIFEST).write_text("{not json")
    with pytest.raises(SketchError, match=r"manifest\.json is unreadable or corrupt"):
        Sketch.open(tmp_path / "sk")


def test_reader_names_a_corrupt_or_truncated_file(tmp_path):
    _write_sketch(tmp_path / "sk")
    f = tmp_path / "sk" / chunk_name(2)
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    sk = Sketch.open(tmp_path / "sk")  # same size: found when read
    with pytest.raises(SketchError, match=r"chunks/phi_00002.npy: corrupt"):
        sk.chunk(2)
    with pytest.raises(SketchError, match=r"chunks/phi_00002.npy: corrupt"):
        sk.verify_all()
    f.write_bytes(bytes(data[:100]))
    with pytest.raises(SketchError, match=r"file chunks/phi_00002.npy is truncated"):
        Sketch.open(tmp_path / "sk")
    f.unlink()
    with pytest.raises(SketchError, match=r"file chunks/phi_00002.npy is missing"):
        Sketch.open(tmp_path / "sk")


# ---------------------------------------------------------------- compatibility
def test_another_format_version_is_refused_naming_both(tmp_path):
    _write_sketch(tmp_path / "sk")
    m = json.loads((tmp_path / "sk" / MANIFEST).read_text())
    assert m["version"] == VERSION == 3
    m["version"] = 1
    (tmp_path / "sk" / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(SketchError, match=r"format version 1, this program reads 3") as e:
        Sketch.open(tmp_path / "sk")
    assert "\n" not in str(e.value)


def test_another_circuit_is_refused_naming_it(tmp_path):
    _write_sketch(tmp_path / "sk")
    sk = Sketch.open(tmp_path / "sk")
    fps = dict(CONFIG["fingerprints"])
    sk.check_compiled(fps)  # the same circuits: no complaint
    with pytest.raises(SketchError, match=r"step circuit for bucket 16 differs") as e:
        sk.check_compiled({**fps, "step:16": "x"})
    assert "\n" not in str(e.value) and "recompile" in str(e.value)
    with pytest.raises(SketchError, match=r"output circuit for bucket 16 is in this program"):
        sk.check_compiled({**fps, "output:16": "o16"})
    assert circuit_differences(fps, fps) == []
    assert circuit_differences({"step:8": "a"}, {"step:8": "a", "output:8": "b"}) == [
        "output circuit for bucket 8 is in this program, not in the sketch"
    ]
    assert circuit_differences({"step:(('x', (3,), 'float'),)": "a"}, {}) == [
        "step circuit for documents (('x', (3,), 'float'),) is in the sketch, not in this program"
    ]
    # a sketch of padded minibatches read by code that packs them (microgpt's keys)
    assert circuit_differences({"step:(4, 8)": "a"}, {"step:(4, 8, 24)": "b"}) == [
        "step circuit for batches of 4, bucket 8 is in the sketch, not in this program",
        "step circuit for batches of 4, bucket 8, 24 packed rows is in this program, "
        "not in the sketch",
    ]
    assert circuit_differences(None, fps) == ["the sketch records no circuit fingerprints"]
