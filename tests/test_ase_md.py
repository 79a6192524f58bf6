"""eqbench.ase.Calculator, `eqbench md` and `eqbench spectrum ir`.

Run directories are written by hand here (config.yaml, checkpoints/best.ckpt, run.json) with a tiny
untrained PaiNN, so the tests need no training: what they check is the loading, the units, ASE's own
finite-difference force check, energy conservation in NVE, and the IR pipeline on a known signal.
"""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces
from ase.io import read, write

from eqbench.ase import Calculator
from eqbench.cli import main
from eqbench.errors import ConfigError, DataError, ModelError
from eqbench.evaluate.md import run_md
from eqbench.evaluate.spectrum import find_peaks, ir_spectrum
from eqbench.heads import Energy
from eqbench.models import E3nnNet, PaiNN
from eqbench.task import AtomisticTask

# From the SI definitions (CODATA 2018); ASE's default constants are CODATA 2014, 1e-8 apart: compare to 1e-7.
KCAL_MOL_IN_EV = 4184.0 / 6.02214076e23 / 1.602176634e-19  # 1 kcal/mol in eV
DEBYE_IN_E_ANGSTROM = 1e-21 / 299792458.0 / 1.602176634e-19 * 1e10  # 1 D = 10⁻²¹/c C·m, in e·Å


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_run(directory, targets, units, elements=(1, 6, 8), seed=0):
    """A run directory as `eqbench fit` leaves it: config.yaml, run.json, checkpoints/best.ckpt."""
    representation = {"class_path": "eqbench.models.PaiNN",
                      "init_args": {"n_features": 8, "n_interactions": 2, "n_rbf": 8, "cutoff": 4.0}}
    config = {"model": {"representation": representation, "targets": targets}}
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    torch.manual_seed(seed)
    task = AtomisticTask(PaiNN(**representation["init_args"]), targets=targets)
    for head in task.model.heads:
        if isinstance(head, Energy):
            head.set_standardization(100.0, -50.0, None)  # forces of ~0.5 eV/Å, as in a real molecule
    (directory / "checkpoints").mkdir()
    torch.save({"state_dict": task.state_dict()}, directory / "checkpoints" / "best.ckpt")
    (directory / "run.json").write_text(json.dumps({"data": {"units": units, "elements": list(elements)}}))
    return task.model.eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ase") / "run"
    write_run(directory, [{"name": "energy"}, {"name": "forces"}, {"name": "dipole", "head": "dipole"}],
              {"energy": "kcal/mol", "forces": "kcal/mol/Å", "dipole": "D"})
    return directory


def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.pbc = False
    return atoms


def test_units_converted_to_ase(run_dir):
    from eqbench.batch import Batch
    from eqbench.tracking import load_model

    model = load_model(run_dir).double()
    atoms = ethanol()
    batch = Batch.from_atoms([atoms])
    batch = replace(batch, pos=torch.as_tensor(atoms.positions, dtype=torch.float64))
    out = {k: v.detach() for k, v in model(batch).items()}
    atoms.calc = Calculator(run_dir, dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(float(out["energy"][0]) * KCAL_MOL_IN_EV, rel=1e-7)
    np.testing.assert_allclose(atoms.get_forces(), out["forces"].numpy() * KCAL_MOL_IN_EV, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(atoms.get_dipole_moment(), out["dipole"][0].numpy() * DEBYE_IN_E_ANGSTROM,
                               rtol=1e-7, atol=1e-14)
    assert abs(atoms.get_potential_energy()) > 1.0  # the standardisation makes the energies non-trivial


def test_polarizability_in_cubic_angstrom(tmp_path):
    from eqbench.batch import Batch

    model = write_run(tmp_path / "alpha", [{"name": "energy"}, {"name": "polarizability", "head": "polarizability"}],
                      {"energy": "Hartree", "polarizability": "a0^3"}).double()
    atoms = ethanol()
    batch = replace(Batch.from_atoms([atoms]), pos=torch.as_tensor(atoms.positions, dtype=torch.float64))
    alpha = model(batch)["polarizability"][0].detach().numpy()
    result = Calculator(tmp_path / "alpha", dtype="float64").evaluate([atoms])[0]
    bohr = 0.529177210903  # Å
    np.testing.assert_allclose(result["polarizability"], alpha * bohr**3, rtol=1e-7)
    assert "dipole" not in result and result["forces"].shape == (9, 3)


def test_ase_finite_difference_forces(run_dir):
    atoms = ethanol()
    atoms.rattle(0.05, seed=1)
    calc = Calculator(run_dir, dtype="float64")
    atoms.calc = calc
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-4)  # ASE's central differences of the energy
    assert np.abs(forces).max() > 1e-2
    np.testing.assert_allclose(forces, numerical, atol=1e-6 * np.abs(forces).max(), rtol=0)


def test_batch_evaluation_equals_one_by_one(run_dir):
    calc = Calculator(run_dir, dtype="float64", batch_size=2)
    frames = [ethanol(), molecule("H2O"), molecule("CH4"), molecule("CO2")]
    for i, atoms in enumerate(frames):
        atoms.rattle(0.02, seed=i)
    together = calc.evaluate(frames)
    for atoms, result in zip(frames, together):
        atoms.calc = Calculator(run_dir, dtype="float64")
        assert result["energy"] == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
        np.testing.assert_allclose(result["forces"], atoms.get_forces(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(result["dipole"], atoms.get_dipole_moment(), rtol=0, atol=1e-10)


def test_float32_close_to_float64_and_checkpoint_path(run_dir):
    atoms = ethanol()
    e64 = Calculator(run_dir, dtype="float64").evaluate([atoms])[0]["energy"]
    e32 = Calculator(run_dir / "checkpoints" / "best.ckpt").evaluate([atoms])[0]["energy"]
    assert e32 == pytest.approx(e64, rel=1e-5)


def test_nve_conserves_energy(run_dir):
    """Velocity Verlet, 0.1 ps of ethanol from 300 K in float64 (the untrained surface heats it to ~900 K, a
    kinetic energy of ~120 meV/atom). Bounds: at 0.5 fs the total energy stays within 1.5 meV/atom of its
    start and ends within 1 meV/atom of it; halving the step shrinks the excursions 4× (0.15–0.35), as a
    second-order integrator on exact gradients must. Inconsistent forces would drift instead."""
    calc = Calculator(run_dir, dtype="float64")
    coarse = run_md(calc, ethanol(), steps=200, timestep_fs=0.5, temperature_K=300, progress=False)
    fine = run_md(calc, ethanol(), steps=400, timestep_fs=0.25, temperature_K=300, progress=False)
    assert len(coarse["total_energy"]) == 201
    e = coarse["total_energy"] * 1000 / 9  # meV/atom
    assert coarse["max_deviation_mev_per_atom"] < 1.5, coarse["max_deviation_mev_per_atom"]
    assert abs(e[-1] - e[0]) < 1.0
    ratio = fine["max_deviation_mev_per_atom"] / coarse["max_deviation_mev_per_atom"]
    assert 0.15 < ratio < 0.35, ratio
    assert coarse["final_atoms"].get_temperature() > 500  # the forces did work: the test is not vacuous


def test_md_cli_writes_trajectory_and_ir_spectrum(run_dir, tmp_path, capsys):
    start = tmp_path / "ethanol.xyz"
    write(start, ethanol())
    out = tmp_path / "md.extxyz"
    assert main(["md", str(run_dir), "--atoms", str(start), "--steps", "40", "--interval", "2", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "energy drift:" in printed
    frames = read(out, ":")
    assert len(frames) == 21
    assert [f.info["time_fs"] for f in frames[:3]] == [0.0, 1.0, 2.0]
    assert frames[-1].get_forces().shape == (9, 3)
    assert np.ptp([f.get_dipole_moment()[0] for f in frames]) > 0
    assert np.ptp([f.get_potential_energy() for f in frames]) > 0
    assert main(["spectrum", "ir", str(out)]) == 0
    assert (tmp_path / "md_ir.csv").is_file() and (tmp_path / "md_ir.png").is_file()

    traj = tmp_path / "md.traj"
    assert main(["md", str(run_dir), "--atoms", str(start), "--steps", "4", "--out", str(traj), "--no-progress",
                 "--thermostat", "langevin"]) == 0
    frames = read(traj, ":")
    assert len(frames) == 5 and frames[-1].get_dipole_moment().shape == (3,)


def test_md_on_gfn2_xtb_records_dipoles(tmp_path):
    pytest.importorskip("tblite", reason="tblite (eqbench[xtb]) is not installed")
    start = tmp_path / "water.xyz"
    write(start, molecule("H2O"))
    out = tmp_path / "xtb.extxyz"
    assert main(["md", "gfn2-xtb", "--atoms", str(start), "--steps", "3", "--out", str(out), "--no-progress"]) == 0
    frames = read(out, ":")
    assert len(frames) == 4
    # Water's GFN2-xTB dipole is about 2 D along the C2 axis (z in ASE's geometry).
    assert abs(frames[0].get_dipole_moment()[2]) / DEBYE_IN_E_ANGSTROM == pytest.approx(2.0, abs=0.6)


# ------------------------------------------------------------------------------------------------ bad input

def test_unknown_element_is_refused(run_dir):
    atoms = Atoms("CCl", positions=[[0, 0, 0], [1.7, 0, 0]])
    with pytest.raises(ModelError, match=r"Cl \(Z=17\).*not trained on"):
        Calculator(run_dir).evaluate([atoms])


def test_run_without_energy_head_is_refused(tmp_path):
    directory = tmp_path / "dipole_only"
    write_run(directory, [{"name": "dipole", "head": "dipole"}], {"dipole": "D"})
    with pytest.raises(ModelError, match="no energy head"):
        Calculator(directory)


def test_missing_dipole_head_and_bad_inputs(tmp_path, run_dir):
    directory = tmp_path / "energy_only"
    write_run(directory, [{"name": "energy"}, {"name": "forces"}], {"energy": "eV"})
    atoms = ethanol()
    atoms.calc = Calculator(directory)
    atoms.get_forces()
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_dipole_moment()
    with pytest.raises(ConfigError, match="neither a run directory nor a .ckpt"):
        Calculator(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="unit 'furlong' of 'energy' is not known"):
        Calculator(directory, units={"energy": "furlong"})
    model = write_run(tmp_path / "module", [{"name": "energy"}], {"energy": "eV"})
    with pytest.raises(ConfigError, match="records no unit for 'energy'"):
        Calculator(model)
    from_module = Calculator(model, units={"energy": "meV"}, dtype="float64").evaluate([ethanol()])[0]["energy"]
    from_run = Calculator(tmp_path / "module", dtype="float64").evaluate([ethanol()])[0]["energy"]
    assert from_module == pytest.approx(1e-3 * from_run, rel=1e-12)
    with pytest.raises(ConfigError, match="dtype"):
        Calculator(directory, dtype="float16")
    with pytest.raises(ConfigError, match=".xyz/.extxyz"):
        run_md(Calculator(directory), ethanol(), steps=2, out=tmp_path / "md.csv", progress=False)


def test_periodic_cells(tmp_path, run_dir):
    """PaiNN handles periodic cells: in a box wider than molecule + cutoff the energy is the molecule's, in a
    small box the images interact; a model whose neighbour list ignores cells refuses periodic input."""
    calc = Calculator(run_dir, dtype="float64")
    molecule_energy = calc.evaluate([ethanol()])[0]["energy"]
    wide, small = ethanol(), ethanol()
    wide.cell, wide.pbc = [12, 12, 12], True  # images ≥ 12 − 3.3 Å away: beyond the 4 Å cutoff
    small.cell, small.pbc = [5, 5, 5], True
    wide_energy, small_energy = (r["energy"] for r in calc.evaluate([wide, small]))
    assert wide_energy == pytest.approx(molecule_energy, abs=1e-9)
    assert abs(small_energy - molecule_energy) > 1e-6
    e3nn_dir = tmp_path / "e3nn"
    e3nn_dir.mkdir()
    representation = {"class_path": "eqbench.models.E3nnNet",
                      "init_args": {"n_features": 4, "n_vectors": 2, "n_interactions": 1, "cutoff": 3.0}}
    (e3nn_dir / "config.yaml").write_text(yaml.safe_dump({"model": {"representation": representation,
                                                                      "targets": [{"name": "energy"}]}}))
    task = AtomisticTask(E3nnNet(**representation["init_args"]), targets=[{"name": "energy"}])
    (e3nn_dir / "checkpoints").mkdir()
    torch.save({"state_dict": task.state_dict()}, e3nn_dir / "checkpoints" / "best.ckpt")
    (e3nn_dir / "run.json").write_text(json.dumps({"data": {"units": {"energy": "eV"}, "elements": [1, 6, 8]}}))
    with pytest.raises(ConfigError, match="periodic"):
        Calculator(e3nn_dir).evaluate([small])


# ------------------------------------------------------------------------------------------------ IR spectrum

def harmonic_dipoles(wavenumbers, n_frames=4000, timestep_fs=0.5, seed=0):
    """μ(t): one cosine per wavenumber, each along its own random direction, with a random phase."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) * timestep_fs * 1e-15  # s
    mu = np.zeros((n_frames, 3))
    for k, nu in enumerate(wavenumbers):
        direction = rng.normal(size=3)
        omega = 2 * math.pi * 2.99792458e10 * nu  # rad/s, c in cm/s
        mu += (1.0 / (k + 1)) * np.cos(omega * t + rng.uniform(0, 2 * math.pi))[:, None] * direction
    return mu


def test_ir_recovers_harmonic_frequencies():
    wavenumber, intensity = ir_spectrum(harmonic_dipoles([1234.0, 2950.0]), timestep_fs=0.5)
    peaks = find_peaks(wavenumber, intensity, threshold=0.05)
    assert len(peaks) == 2, peaks
    assert sorted(peaks) == pytest.approx([1234.0, 2950.0], abs=5.0)
    assert wavenumber[-1] <= 4000.0 and intensity.max() == pytest.approx(1.0)


def test_compare_spectra_matches_peaks_and_measures_shifts():
    from eqbench.evaluate.spectrum import compare_spectra

    reference = ir_spectrum(harmonic_dipoles([1200.0, 3000.0], seed=0), timestep_fs=0.5)
    shifted = ir_spectrum(harmonic_dipoles([1230.0, 3000.0], seed=0), timestep_fs=0.5)
    same = compare_spectra(reference, reference)
    assert same["overlap"] == pytest.approx(1.0) and same["mean_abs_shift"] == 0.0
    c = compare_spectra(reference, shifted)
    (p1, q1), (p2, q2) = c["matches"]
    assert (p1, p2) == pytest.approx([1200.0, 3000.0], abs=5.0)
    assert (q1 - p1, q2 - p2) == pytest.approx([30.0, 0.0], abs=5.0)
    assert c["mean_abs_shift"] == pytest.approx(15.0, abs=5.0) and 0.5 < c["overlap"] < 0.99  # 3000 cm⁻¹ dominates
    far = compare_spectra(reference, shifted, max_shift=10.0)
    assert far["matches"][0][1] is None and far["matches"][1][1] is not None


def test_ir_harmonic_quantum_correction_factor():
    """At the peak, the corrected intensity over the classical one is βħω / (1 − e^(−βħω))."""
    nu, temperature = 1500.0, 300.0
    mu = harmonic_dipoles([nu])
    w, classical = ir_spectrum(mu, 0.5, max_wavenumber=4000.0)
    _, corrected = ir_spectrum(mu, 0.5, quantum_correction="harmonic", temperature_K=temperature)
    # Undo the normalisation with the raw ratio at two points: the factor must grow with ν̃ as x/(1−e^−x).
    i_peak = int(np.argmax(classical))
    x = 6.62607015e-34 * 2.99792458e10 * w[i_peak] / (1.380649e-23 * temperature)
    i_other = int(np.argmin(np.abs(w - 0.5 * w[i_peak])))
    x_other = 6.62607015e-34 * 2.99792458e10 * w[i_other] / (1.380649e-23 * temperature)
    ratio_peak = corrected[i_peak] / classical[i_peak]
    ratio_other = corrected[i_other] / classical[i_other]
    expected = (x / -math.expm1(-x)) / (x_other / -math.expm1(-x_other))
    assert ratio_peak / ratio_other == pytest.approx(expected, rel=1e-9)


def test_ir_input_errors(tmp_path):
    with pytest.raises(DataError, match="dipole time series"):
        ir_spectrum(np.zeros((4, 3)), 0.5)
    frames = [ethanol() for _ in range(3)]
    path = tmp_path / "no_dipole.extxyz"
    write(path, frames)
    with pytest.raises(DataError, match="frame 0 has no dipole"):
        main_raises(["spectrum", "ir", str(path)])


def main_raises(argv):
    """Run the CLI with EqbenchError propagated (EQBENCH_DEBUG) so the test sees the exception."""
    import os

    os.environ["EQBENCH_DEBUG"] = "1"
    try:
        return main(argv)
    finally:
        del os.environ["EQBENCH_DEBUG"]


def test_spectrum_cli_compares_trajectories(tmp_path, capsys):
    """Two trajectories of known dipole frequencies: one plot, one peak table with both frequencies."""
    paths = []
    for name, nu in (("model", 1100.0), ("reference", 1700.0)):
        frames = []
        for k, mu in enumerate(harmonic_dipoles([nu], n_frames=1000, timestep_fs=1.0)):
            atoms = Atoms("HF", positions=[[0, 0, 0], [0.92, 0, 0]])
            atoms.info.update(dipole=mu, time_fs=float(k))
            frames.append(atoms)
        paths.append(tmp_path / f"{name}.extxyz")
        write(paths[-1], frames)
    out = tmp_path / "ir"
    assert main(["spectrum", "ir", *map(str, paths), "--labels", "PaiNN", "GFN2-xTB", "--out", str(out)]) == 0
    assert (out / "ir.png").is_file() and (out / "PaiNN.csv").is_file() and (out / "GFN2-xTB.csv").is_file()
    peaks_table, agreement = (out / "peaks.md").read_text().split("\n\n", 1)
    rows = {line.split("|")[1].strip(): line for line in peaks_table.splitlines()[2:]}
    for label, nu in (("PaiNN", 1100.0), ("GFN2-xTB", 1700.0)):
        found = [float(cell.split()[0]) for cell in rows[label].split("|")[2].split(",")]
        assert any(abs(p - nu) < 5 for p in found), (label, found)
    # 600 cm⁻¹ apart: GFN2-xTB's peak has no PaiNN peak within 100 cm⁻¹, and the curves barely overlap
    (row,) = [line for line in agreement.splitlines() if line.startswith("| GFN2-xTB |")]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert float(cells[1]) < 0.1 and cells[2] == "0 of 1" and cells[3] == "—"
    with pytest.raises(ConfigError, match="--labels"):
        main_raises(["spectrum", "ir", *map(str, paths), "--labels", "one"])
