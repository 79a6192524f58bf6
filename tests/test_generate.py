"""GFN2-xTB reference-data generation (eqbench.data.generate): labels, angles, resume, bundled sets.

Tests that run tblite skip when it is not installed; the bundled-data tests need only h5py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eqbench.data.cache import read_cache
from eqbench.errors import GenerationError

BUNDLED = Path(__file__).resolve().parents[1] / "eqbench" / "data" / "bundled"
MAX_BUNDLED_BYTES = 1_500_000


@pytest.fixture(scope="module")
def tblite():
    return pytest.importorskip("tblite.interface", reason="tblite not installed (pip install 'eqbench[xtb]')")


def tblite_direct(numbers, positions, tblite):
    """Energy (kcal/mol) and forces (kcal/mol/Å) from tblite's own API, not through eqbench or ASE."""
    from ase import units

    from eqbench.data.generate.engine import single_threaded_openmp

    with single_threaded_openmp():  # only for speed: OpenMP threads crawl on a busy 2-core machine
        return _tblite_direct(numbers, positions, tblite, units)


def _tblite_direct(numbers, positions, tblite, units):
    calc = tblite.Calculator("GFN2-xTB", np.asarray(numbers), np.asarray(positions) / units.Bohr)
    calc.set("verbosity", 0)
    calc.set("accuracy", 1.0)
    calc.set("temperature", 300.0 * units.kB / units.Hartree)
    calc.set("max-iter", 250)
    res = calc.singlepoint()
    kcal_mol = units.kcal / units.mol
    return res["energy"] * units.Hartree / kcal_mol, -res["gradient"] * units.Hartree / units.Bohr / kcal_mol


def structures(ds):
    for i in range(len(ds)):
        a, b = ds.offsets[i], ds.offsets[i + 1]
        yield i, ds.z[a:b], ds.pos[a:b]


def arrays(ds) -> dict[str, np.ndarray]:
    return {"z": ds.z, "pos": ds.pos, "offsets": ds.offsets,
            **{name: p.values for name, p in ds.properties.items()}}


def assert_same_arrays(a, b):
    x, y = arrays(a), arrays(b)
    assert x.keys() == y.keys()
    for name in x:
        np.testing.assert_array_equal(x[name], y[name], err_msg=name)
    assert a.fingerprint == b.fingerprint


# ------------------------------------------------------------------------------------------ small sets
@pytest.fixture(scope="module")
def small(tblite, tmp_path_factory):
    """Tiny generated sets, shared by the tests of this module."""
    from eqbench.data.generate import (
        generate_cumulene,
        generate_cumulene_profile,
        generate_ferrocene,
        generate_ferrocene_profile,
        generate_md,
    )

    d = tmp_path_factory.mktemp("generated")
    generate_ferrocene(d / "fc.h5", n=6, chunk_size=2, progress=False)
    generate_ferrocene_profile(d / "fcp.h5", step=30.0, progress=False)
    generate_cumulene(d / "cu.h5", n=3, sizes=(3, 4, 9), chunk_size=4, progress=False)
    generate_cumulene_profile(d / "cup.h5", sizes=(3, 4), step=30.0, progress=False)
    generate_md(d / "md.h5", "ethanol", n=4, stride=2, equilibration=4, trajectories=2, chunk_size=1,
                progress=False)
    return {name: read_cache(d / f"{name}.h5", validate=True) for name in ("fc", "fcp", "cu", "cup", "md")}


@pytest.mark.parametrize("name", ["fc", "fcp", "cu", "cup", "md"])
def test_labels_equal_tblite_called_directly(small, tblite, name):
    ds = small[name]
    assert ds.units["energy"] == "kcal/mol" and ds.units["forces"] == "kcal/mol/Å"
    for i, z, pos in structures(ds):
        energy, forces = tblite_direct(z, pos, tblite)
        assert ds.properties["energy"].values[i] == pytest.approx(energy, abs=1e-6)
        stored = ds.properties["forces"].values[ds.offsets[i]:ds.offsets[i + 1]]
        np.testing.assert_allclose(stored, forces, rtol=1e-6, atol=1e-5)  # stored as float32


def test_md_frames_store_the_dipole_of_tblite_called_directly(small, tblite):
    """The dipole label (D) of every MD frame is tblite's own dipole (e·a0) of that geometry."""
    from ase import units

    from eqbench.data.generate.engine import single_threaded_openmp

    ds = small["md"]
    assert ds.units["dipole"] == "D" and ds.properties["dipole"].values.shape == (len(ds), 3)
    for i, z, pos in structures(ds):
        calc = tblite.Calculator("GFN2-xTB", np.asarray(z), np.asarray(pos) / units.Bohr)
        calc.set("verbosity", 0)
        calc.set("temperature", 300.0 * units.kB / units.Hartree)
        with single_threaded_openmp():
            dipole_e_bohr = calc.singlepoint()["dipole"]
        expected = dipole_e_bohr * units.Bohr / units.Debye
        assert 1.0 < np.linalg.norm(expected) < 2.5  # ethanol: ~1.7 D
        np.testing.assert_allclose(ds.properties["dipole"].values[i], expected, atol=1e-5)


def _theta_from_geometry(pos: np.ndarray, roles: dict) -> float:
    """θ recomputed here from the definition, independently of the generator's code."""
    ring_a, ring_b = roles["ring_a_carbons"], roles["ring_b_carbons"]
    axis = pos[ring_b].mean(0) - pos[ring_a].mean(0)
    axis /= np.linalg.norm(axis)
    u = pos[roles["f_a"]] - pos[ring_a[0]]
    v = pos[roles["f_b"]] - pos[ring_b[0]]
    u, v = u - (u @ axis) * axis, v - (v @ axis) * axis
    return float(np.degrees(np.arctan2(axis @ np.cross(u, v), u @ v)) % 360)


def _phi_from_geometry(pos: np.ndarray, n_carbon: int) -> float:
    axis = pos[n_carbon - 1] - pos[0]
    axis /= np.linalg.norm(axis)
    u = pos[n_carbon + 1] - pos[n_carbon]
    v = pos[n_carbon + 3] - pos[n_carbon + 2]
    u, v = u - (u @ axis) * axis, v - (v @ axis) * axis
    return float(np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))))


def _angle_difference(a: float, b: float, period: float = 360.0) -> float:
    return abs((a - b + period / 2) % period - period / 2)


@pytest.mark.parametrize("name", ["fc", "fcp"])
def test_theta_is_the_angle_of_the_stored_geometry(small, name):
    ds = small[name]
    roles = ds.metadata["atom_roles"]
    theta = ds.properties["theta"].values
    assert ds.units["theta"] == "deg" and ((theta >= 0) & (theta < 360)).all()
    for i, _, pos in structures(ds):
        assert _angle_difference(theta[i], _theta_from_geometry(pos, roles)) < 1e-4


@pytest.mark.parametrize("name", ["cu", "cup"])
def test_phi_is_the_angle_of_the_stored_geometry(small, name):
    ds = small[name]
    phi, n_carbon = ds.properties["phi"].values, ds.properties["n_carbon"].values
    assert ((phi >= 0) & (phi <= 180)).all()
    for i, z, pos in structures(ds):
        assert (z == 6).sum() == n_carbon[i]
        assert abs(phi[i] - _phi_from_geometry(pos, int(n_carbon[i]))) < 1e-4


def test_profiles_cover_the_scan(small):
    np.testing.assert_allclose(small["fcp"].properties["theta"].values, np.arange(0, 360, 30))
    cup = small["cup"]
    assert sorted(set(cup.properties["n_carbon"].values)) == [3, 4]
    np.testing.assert_allclose(cup.properties["phi"].values[cup.properties["n_carbon"].values == 3],
                               np.arange(0, 181, 30))


def _bonded_pairs(numbers, positions):
    from ase import Atoms
    from ase.neighborlist import NeighborList, natural_cutoffs

    atoms = Atoms(numbers=numbers, positions=positions)
    nl = NeighborList(natural_cutoffs(atoms, mult=1.1), self_interaction=False, bothways=False)
    nl.update(atoms)
    return [(i, int(j)) for i in range(len(atoms)) for j in nl.get_neighbors(i)[0]]


@pytest.mark.parametrize("name", ["fcp", "cup"])
def test_rigid_scans_keep_bond_lengths_fixed(small, name):
    ds = small[name]
    scans: dict[int, list] = {}  # one scan per molecule (cumulene: per chain length)
    for _, z, pos in structures(ds):
        scans.setdefault(len(z), []).append((z, pos))
    for frames in scans.values():
        numbers, first = frames[0]
        pairs = _bonded_pairs(numbers, first)
        assert len(pairs) >= len(numbers) - 1  # the molecule is connected
        i, j = np.array(pairs).T
        lengths = np.array([np.linalg.norm(pos[i] - pos[j], axis=1) for _, pos in frames])
        assert np.abs(lengths - lengths[0]).max() < 1e-8
        if name == "fcp":  # Fe–C distances are among the bonds kept fixed
            assert (numbers[i] == 26).any() or (numbers[j] == 26).any()
    assert np.ptp(ds.properties["energy"].values) > 0.1  # while the energy changes along the scan


def test_sampled_sets_fluctuate_thermally(small):
    ds = small["fc"]
    ref = np.array(ds.metadata["reference"]["positions"])
    pos = ds.pos.reshape(len(ds), -1, 3)
    ring = ds.metadata["atom_roles"]["ring_a_carbons"]
    cc = np.linalg.norm(pos[:, ring[0]] - pos[:, ring[1]], axis=1)
    cc0 = np.linalg.norm(ref[ring[0]] - ref[ring[1]])
    assert 0.003 < np.abs(cc - cc0).mean() < 0.1  # ~0.02 Å at 300 K: thermal, neither rigid nor broken
    energy_above_minimum = ds.properties["energy"].values - ds.metadata["reference"]["energy"]
    assert (energy_above_minimum > 0).all() and np.median(energy_above_minimum) < 40


def test_metadata_records_settings_and_command(small):
    meta = small["fc"].metadata
    calc = meta["calculator"]
    for key in ("method", "accuracy", "electronic_temperature", "max_iterations", "charge", "multiplicity",
                "tblite_version", "scf_retries"):
        assert key in calc
    assert calc["method"] == "GFN2-xTB" and calc["electronic_temperature"] == 300.0
    assert meta["seed"] == 0 and meta["sampling"]["temperature_K"] == 300.0
    assert meta["command"].startswith("python: eqbench.data.generate.generate_ferrocene(")
    assert meta["scf_failures"] == [] and meta["n_structures"] == 6
    md = small["md"]
    assert md.metadata["sampling"]["temperature_K"] == 500.0
    np.testing.assert_array_equal(md.properties["trajectory"].values, [0, 0, 1, 1])
    np.testing.assert_allclose(md.properties["time"].values, [1.0, 2.0, 1.0, 2.0])  # stride 2 × 0.5 fs


# ------------------------------------------------------------------------------------------ determinism, resume
class Interrupt(Exception):
    """Stands for the run being killed."""


def _interrupt_after(monkeypatch, chunks: int):
    from eqbench.data.generate import runner

    original, saved = runner.save_chunk, []

    def save_then_maybe_die(*args, **kwargs):
        path = original(*args, **kwargs)
        saved.append(path)
        if len(saved) == chunks:
            raise Interrupt
        return path

    monkeypatch.setattr(runner, "save_chunk", save_then_maybe_die)


def _count_labels(monkeypatch) -> list:
    from eqbench.data.generate import chunks

    calls, original = [], chunks.single_point
    monkeypatch.setattr(chunks, "single_point", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_killed_ferrocene_run_resumes_to_the_same_file(small, tblite, tmp_path, monkeypatch):
    from eqbench.data.generate import generate_ferrocene

    kwargs = {"n": 6, "chunk_size": 2, "progress": False}  # as small["fc"], made without interruption
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(Interrupt):
            generate_ferrocene(tmp_path / "resumed.h5", **kwargs)
    parts = tmp_path / "resumed.h5.parts"
    assert not (tmp_path / "resumed.h5").exists()
    assert sorted(p.name for p in parts.glob("chunk-*.npz")) == ["chunk-00000.npz", "chunk-00001.npz"]
    calls = _count_labels(monkeypatch)
    generate_ferrocene(tmp_path / "resumed.h5", **kwargs)
    assert len(calls) == 2  # only the last chunk was computed
    assert not parts.exists()
    resumed = read_cache(tmp_path / "resumed.h5")
    assert_same_arrays(small["fc"], resumed)
    assert len(resumed.metadata["resume_commands"]) == 1


def test_killed_md_run_resumes_mid_trajectory(tblite, tmp_path, monkeypatch):
    from eqbench.data.generate import generate_md

    kwargs = {"n": 5, "stride": 3, "equilibration": 3, "chunk_size": 2, "progress": False}
    generate_md(tmp_path / "whole.h5", "ethanol", **kwargs)
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(Interrupt):
            generate_md(tmp_path / "resumed.h5", "ethanol", **kwargs)
    generate_md(tmp_path / "resumed.h5", "ethanol", **kwargs)
    assert_same_arrays(read_cache(tmp_path / "whole.h5"), read_cache(tmp_path / "resumed.h5"))
    # Handing the trajectory from chunk to chunk (positions, momenta, thermostat noise) is exact:
    # one chunk holding the whole trajectory gives the same frames.
    generate_md(tmp_path / "one_chunk.h5", "ethanol", **(kwargs | {"chunk_size": 5}))
    assert_same_arrays(read_cache(tmp_path / "whole.h5"), read_cache(tmp_path / "one_chunk.h5"))


def test_result_does_not_depend_on_workers_or_chunks(small, tblite, tmp_path):
    from eqbench.data.generate import generate_ferrocene

    generate_ferrocene(tmp_path / "two.h5", n=6, chunk_size=3, workers=2, progress=False)
    assert_same_arrays(small["fc"], read_cache(tmp_path / "two.h5"))


def test_other_seed_gives_other_structures(small, tblite, tmp_path):
    from eqbench.data.generate import generate_ferrocene

    generate_ferrocene(tmp_path / "seed1.h5", n=2, seed=1, progress=False)
    assert not np.allclose(read_cache(tmp_path / "seed1.h5").pos, small["fc"].pos[: 2 * 21])


def test_resuming_with_other_settings_is_refused(tmp_path):
    from eqbench.data.generate.runner import open_parts

    open_parts(tmp_path / "x.h5", {"n": 10, "seed": 0}, "first")
    with pytest.raises(GenerationError, match=r"different settings \(differs in \['seed'\]\).*delete"):
        open_parts(tmp_path / "x.h5", {"n": 10, "seed": 1}, "second")


# ------------------------------------------------------------------------------------------ SCF failures
def test_scf_retry_is_recorded_and_gives_the_converged_label(small, tblite, tmp_path):
    from eqbench.data.generate import XTBSettings, generate_cumulene_profile

    generate_cumulene_profile(tmp_path / "retry.h5", sizes=(3, 4), step=30.0, progress=False,
                              settings=XTBSettings(max_iterations=4))
    ds = read_cache(tmp_path / "retry.h5")
    retries = ds.metadata["scf_retries"]
    assert len(retries) == len(ds) and all(r["retries"] >= 1 for r in retries)
    assert ds.metadata["calculator"]["scf_retries"][0]["max_iterations"] == 16
    np.testing.assert_allclose(ds.properties["energy"].values, small["cup"].properties["energy"].values,
                               atol=1e-5)


def test_scf_failure_is_recorded_and_reported_not_dropped_silently(tblite, tmp_path, monkeypatch):
    from eqbench.data.generate import chunks, generate_ferrocene
    from eqbench.data.generate.engine import SCFNotConverged

    original = chunks.single_point

    def fail_on_index_one(numbers, positions, settings):
        label = original(numbers, positions, settings)
        if fail_on_index_one.calls == 1:
            fail_on_index_one.calls += 1
            raise SCFNotConverged("SCF did not converge (injected)")
        fail_on_index_one.calls += 1
        return label

    fail_on_index_one.calls = 0
    monkeypatch.setattr(chunks, "single_point", fail_on_index_one)
    result = generate_ferrocene(tmp_path / "fail.h5", n=3, progress=False)
    ds = read_cache(tmp_path / "fail.h5")
    assert len(ds) == 2
    np.testing.assert_array_equal(ds.properties["sample_index"].values, [0, 2])
    failures = ds.metadata["scf_failures"]
    assert [f["index"] for f in failures] == [1] and "injected" in failures[0]["errors"][0]
    assert len(failures[0]["positions"]) == 21
    assert "WARNING: 1 of 3 structures failed" in result.summary()


# ------------------------------------------------------------------------------------------ CLI
def test_cli_records_the_full_command(tblite, tmp_path):
    import argparse

    from eqbench.data.generate import cli

    parser = argparse.ArgumentParser(prog="eqbench data generate")
    cli.add_arguments(parser)
    out = tmp_path / "cli.h5"
    args = parser.parse_args(["cumulene-profile", "--out", str(out), "--sizes", "3", "--step", "90",
                              "--workers", "1", "--no-progress"])
    assert cli.run(args) == 0
    ds = read_cache(out)
    assert ds.metadata["command"] == (f"eqbench data generate cumulene-profile --out {out} --sizes 3 --step 90.0 "
                                      f"--accuracy 1.0 --electronic-temperature 300.0 --max-iterations 250 "
                                      f"--workers 1")
    np.testing.assert_allclose(ds.properties["phi"].values, [0, 90, 180])


def test_md_rejects_a_missing_molecule_file(tmp_path):
    from eqbench.data.generate.md import load_molecule

    with pytest.raises(GenerationError, match="neither a built-in"):
        load_molecule(tmp_path / "nope.xyz")


def test_shipped_aspirin_is_a_relaxed_molecule():
    from eqbench.data.generate.md import load_molecule

    atoms = load_molecule("aspirin")
    assert atoms.get_chemical_formula() == "C9H8O4"
    assert "GFN2-xTB minimum" in Path(__file__).resolve().parents[1].joinpath(
        "eqbench/data/generate/molecules/aspirin.xyz").read_text().splitlines()[1]


# ------------------------------------------------------------------------------------------ bundled sets
@pytest.mark.parametrize("name", ["ferrocene", "ferrocene_profile", "cumulene", "cumulene_profile"])
def test_bundled_set_loads_and_is_small(name):
    path = BUNDLED / f"{name}.h5"
    assert path.stat().st_size <= MAX_BUNDLED_BYTES
    ds = read_cache(path)
    assert ds.units["energy"] == "kcal/mol" and ds.units["forces"] == "kcal/mol/Å"
    assert ds.metadata["command"].startswith("eqbench data generate ")
    assert ds.metadata["scf_failures"] == []
    assert ds.metadata["calculator"]["method"] == "GFN2-xTB"
    assert ds.metadata["command"] in (BUNDLED / "README.md").read_text()
    if name == "ferrocene":
        assert len(ds) >= 2000
    if name.startswith("cumulene"):
        assert {5, 9} <= set(ds.properties["n_carbon"].values.tolist())


def test_bundled_angles_are_spread_uniformly():
    theta = read_cache(BUNDLED / "ferrocene.h5").properties["theta"].values
    counts, _ = np.histogram(theta, bins=12, range=(0, 360))
    expected = len(theta) / 12
    assert (np.abs(counts - expected) < 5 * np.sqrt(expected)).all(), counts
    cumulene = read_cache(BUNDLED / "cumulene.h5")
    for n in (5, 9):
        phi = cumulene.properties["phi"].values[cumulene.properties["n_carbon"].values == n]
        counts, _ = np.histogram(phi, bins=6, range=(0, 180))
        expected = len(phi) / 6
        assert (np.abs(counts - expected) < 5 * np.sqrt(expected)).all(), (n, counts)


def test_bundled_profiles_show_the_papers_effects():
    ferrocene = read_cache(BUNDLED / "ferrocene_profile.h5")
    span = np.ptp(ferrocene.properties["energy"].values)
    assert 0.3 < span < 2.0  # PaiNN §5.3.2: "small energy fluctuations (< 1 kcal/mol)"
    cumulene = read_cache(BUNDLED / "cumulene_profile.h5")
    e, n, phi = (cumulene.properties[k].values for k in ("energy", "n_carbon", "phi"))
    barriers = {int(k): np.ptp(e[n == k]) for k in np.unique(n)}
    assert barriers[5] > barriers[9] > 10  # barriers fall with chain length
    for k in (5, 9):  # odd chains: minimum at 90°
        assert phi[n == k][np.argmin(e[n == k])] == pytest.approx(90.0)
    json.dumps(cumulene.metadata)  # metadata is plain JSON


# ------------------------------------------------------------------------------------------ split protocols
def test_rotor_split_protocols():
    import eqbench.data.rotors  # noqa: F401  (registers the protocols)
    from eqbench.data.splits import PROTOCOLS
    from eqbench.errors import SplitError

    train, val, test = PROTOCOLS["ferrocene"](np.arange(12_000), seed=0)
    assert (len(train), len(val), len(test)) == (10_000, 1_000, 1_000)  # PaiNN §5.3.2
    assert len(np.unique(np.concatenate([train, val, test]))) == 12_000
    candidates = np.arange(100, 400)  # e.g. the C9H4 rows chosen by subset={"n_carbon": [9]}
    train, val, test = PROTOCOLS["cumulene"](candidates, seed=1, train=200, val=50)
    assert (len(train), len(val), len(test)) == (200, 50, 50) and set(train) <= set(candidates)
    with pytest.raises(SplitError, match="choose smaller sizes"):
        PROTOCOLS["ferrocene"](np.arange(2000), seed=0)  # the bundled set needs CPU-sized splits
