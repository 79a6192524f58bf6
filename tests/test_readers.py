"""``eqbench.data.read`` on extxyz and ASE databases, and ``eqbench data prepare|info``."""

# extxyz stores 8 decimals: values are compared to 1e-7.

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase import units as ase_units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect
from ase.io import write

from eqbench.cli import main
from eqbench.data import read, read_cache
from eqbench.data.cache import fingerprint
from eqbench.errors import DataError
from tests.conftest import make_molecules

SIZES = [3, 5, 1, 4, 6]


@pytest.fixture
def raw():
    return make_molecules(SIZES, seed=5)


def frames_from(raw, energy_in="info"):
    numbers, positions, props = raw
    frames = []
    for b, (z, pos) in enumerate(zip(numbers, positions, strict=True)):
        atoms = Atoms(numbers=z, positions=pos)
        if energy_in == "info":
            atoms.info["energy"] = props["energy"][b]
            atoms.arrays["forces"] = props["forces"][b]
        else:
            atoms.calc = SinglePointCalculator(atoms, energy=props["energy"][b], forces=props["forces"][b])
        atoms.arrays["hirshfeld"] = props["charges"][b]  # an extra per-atom array
        atoms.info["gap"] = 0.5 + b
        frames.append(atoms)
    return frames


def assert_matches_raw(ds, raw, names=("energy", "forces", "hirshfeld", "gap"), length_factor=1.0):
    numbers, positions, props = raw
    assert len(ds) == len(SIZES)
    assert ds.n_atoms.tolist() == SIZES
    assert ds.z.tolist() == [int(x) for z in numbers for x in z]
    np.testing.assert_allclose(ds.pos, np.concatenate(positions) * length_factor, rtol=1e-7, atol=1e-7)
    expected = {"energy": (np.array(props["energy"]), False), "forces": (np.concatenate(props["forces"]), True),
                "hirshfeld": (np.concatenate(props["charges"]), True), "gap": (0.5 + np.arange(5.0), False),
                "dipole_moment": (np.stack(props["dipole"]), False)}
    assert set(ds.properties) == set(names)
    for name in names:
        values, per_atom = expected[name]
        prop = ds.properties[name]
        assert prop.per_atom is per_atom, name
        assert prop.values.shape == values.shape, name
        np.testing.assert_allclose(prop.values, values, rtol=1e-7, atol=1e-7, err_msg=name)


# ---------------------------------------------------------------------- extxyz
UNITS = {"energy": "eV", "forces": "eV/Å", "hirshfeld": "e", "gap": "eV"}


@pytest.mark.parametrize("energy_in", ["info", "calculator"])
def test_extxyz(tmp_path, raw, energy_in):
    path = tmp_path / "frames.extxyz"
    write(path, frames_from(raw, energy_in), format="extxyz")
    ds = read(path, units=UNITS)
    assert_matches_raw(ds, raw)
    assert ds.units == UNITS
    assert ds.metadata["source_file"] == str(path)
    # the same file with .xyz suffix, and with the format named explicitly
    xyz = tmp_path / "frames.xyz"
    xyz.write_bytes(path.read_bytes())
    assert fingerprint(read(xyz, units=UNITS)) == fingerprint(ds)
    other = tmp_path / "frames.txt"
    other.write_bytes(path.read_bytes())
    assert fingerprint(read(other, format="extxyz", units=UNITS)) == fingerprint(ds)


def test_extxyz_needs_units(tmp_path, raw):
    path = tmp_path / "frames.extxyz"
    write(path, frames_from(raw), format="extxyz")
    with pytest.raises(DataError) as err:
        read(path)
    assert str(path) in str(err.value) and "unit" in str(err.value)
    with pytest.raises(DataError, match="forces"):
        read(path, units={"energy": "eV", "hirshfeld": "e", "gap": "eV"})


def test_extxyz_property_selection(tmp_path, raw):
    path = tmp_path / "frames.extxyz"
    write(path, frames_from(raw, "calculator"), format="extxyz")
    ds = read(path, units={"energy": "kcal/mol", "forces": "kcal/mol/Å"}, properties=["energy", "forces"])
    assert_matches_raw(ds, raw, names=("energy", "forces"))
    assert ds.units == {"energy": "kcal/mol", "forces": "kcal/mol/Å"}
    ds = read(path, units={"hirshfeld": "e"}, properties=["hirshfeld"])
    assert_matches_raw(ds, raw, names=("hirshfeld",))
    with pytest.raises(DataError, match="'dipole'"):
        read(path, units={"dipole": "D"}, properties=["dipole"])


def test_extxyz_distance_unit(tmp_path, raw):
    path = tmp_path / "bohr.extxyz"
    write(path, frames_from(raw), format="extxyz")
    ds = read(path, units=UNITS, distance_unit="Bohr")
    assert_matches_raw(ds, raw, length_factor=ase_units.Bohr)
    with pytest.raises(DataError, match="parsec"):
        read(path, units=UNITS, distance_unit="parsec")


def test_extxyz_calculator_outputs_by_kind(tmp_path):
    # ASE stores per-atom energies and a polarization vector as calculator results; a 3-atom
    # molecule must not make the 3-vector look per atom.
    rng = np.random.default_rng(0)
    frames = []
    for n in (3, 3, 4):
        atoms = Atoms(numbers=[1] * n, positions=np.arange(3 * n).reshape(n, 3) * 0.7)
        atoms.calc = SinglePointCalculator(atoms, energy=1.0, energies=rng.normal(size=n),
                                           polarization=rng.normal(size=3))
        frames.append(atoms)
    path = tmp_path / "kinds.extxyz"
    write(path, frames, format="extxyz")
    ds = read(path, units={"energy": "eV", "energies": "eV", "polarization": "e Å"})
    assert ds.properties["energies"].per_atom and ds.properties["energies"].values.shape == (10,)
    assert not ds.properties["polarization"].per_atom and ds.properties["polarization"].values.shape == (3, 3)


# ---------------------------------------------------------------------- ASE database
def test_ase_db(tmp_path, raw):
    path = tmp_path / "plain.db"
    with connect(str(path)) as db:
        for atoms in frames_from(raw, "calculator"):
            db.write(atoms, gap=atoms.info["gap"], data={"hirshfeld": atoms.arrays["hirshfeld"]})
    ds = read(path, units=UNITS)
    assert_matches_raw(ds, raw)
    with pytest.raises(DataError, match="unit"):
        read(path)  # a plain ASE database has no units
    ds = read(path, units={"energy": "eV"}, properties=["energy"])
    assert_matches_raw(ds, raw, names=("energy",))


def write_schnetpack_db(path, raw, distance_unit="Ang", length_factor=1.0):
    numbers, positions, props = raw
    with connect(str(path)) as db:
        # schnetpack's layout: per-molecule values with a leading axis of 1, per-atom ones (n, ...)
        db.metadata = {"_property_unit_dict": {"energy": "eV", "forces": "eV/Ang", "dipole_moment": "D",
                                               "hirshfeld": "e"},
                       "_distance_unit": distance_unit, "atomrefs": {}}
        for b, (z, pos) in enumerate(zip(numbers, positions, strict=True)):
            atoms = Atoms(numbers=z, positions=pos / length_factor)
            db.write(atoms, data={"energy": np.array([props["energy"][b]]), "forces": props["forces"][b],
                                  "dipole_moment": props["dipole"][b][None, :], "hirshfeld": props["charges"][b]})


SPK_UNITS = {"energy": "eV", "forces": "eV/Ang", "dipole_moment": "D", "hirshfeld": "e"}
SPK_NAMES = tuple(SPK_UNITS)


def test_schnetpack_db(tmp_path, raw):
    path = tmp_path / "spk.db"
    write_schnetpack_db(path, raw)
    ds = read(path)  # units from the metadata
    assert ds.units == SPK_UNITS
    # SIZES has a one-atom molecule: its energy of shape (1,) must not look per atom
    assert_matches_raw(ds, raw, names=SPK_NAMES)
    assert ds.properties["energy"].values.shape == (5,)  # per molecule, not (B, 1)
    assert ds.properties["dipole_moment"].values.shape == (5, 3)
    # units given by the caller override the file's
    assert read(path, units={"energy": "meV"}).units["energy"] == "meV"


def test_schnetpack_db_in_bohr(tmp_path, raw):
    path = tmp_path / "bohr.db"
    write_schnetpack_db(path, raw, distance_unit="Bohr", length_factor=ase_units.Bohr)
    ds = read(path)
    assert_matches_raw(ds, raw, names=SPK_NAMES)  # positions back in Å


# ---------------------------------------------------------------------- CLI
def test_cli_prepare_and_info(tmp_path, raw, capsys):
    src = tmp_path / "frames.extxyz"
    write(src, frames_from(raw, "calculator"), format="extxyz")
    out = tmp_path / "caches" / "frames.h5"
    assert main(["data", "prepare", str(src), "--out", str(out), "--units", "energy=eV", "forces=eV/Å",
                 "--properties", "energy", "forces"]) == 0
    printed = capsys.readouterr().out
    ds = read_cache(out)
    assert_matches_raw(ds, raw, names=("energy", "forces"))
    assert ds.units == {"energy": "eV", "forces": "eV/Å"}
    assert fingerprint(ds) == ds.fingerprint and ds.fingerprint in printed and "5 molecules" in printed

    assert main(["data", "info", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    info = {line.split()[0]: line for line in lines if line and not line.startswith(" ")}
    assert info["molecules"].split()[1] == "5"
    assert info["atoms"].split()[1] == str(sum(SIZES))
    z = np.concatenate(raw[0])
    symbols = {1: "H", 6: "C", 7: "N", 8: "O"}
    expected_elements = ", ".join(f"{symbols[e]} ({int((z == e).sum())})" for e in sorted(set(z.tolist())))
    assert info["elements"].split(None, 1)[1] == expected_elements
    props = {line.split()[0]: line.split() for line in lines if line.startswith("  ")}
    assert props["energy"][1:4] == ["eV", "per", "molecule"]
    assert props["forces"][1:4] == ["eV/Å", "per", "atom"]
    assert info["fingerprint"].split()[1] == fingerprint(ds)


def test_cli_prepare_schnetpack_db(tmp_path, raw, capsys):
    src = tmp_path / "spk.db"
    write_schnetpack_db(src, raw, distance_unit="Bohr", length_factor=ase_units.Bohr)
    out = tmp_path / "spk.h5"
    assert main(["data", "prepare", str(src), "--out", str(out)]) == 0
    ds = read_cache(out)
    assert_matches_raw(ds, raw, names=SPK_NAMES)
    assert ds.units == SPK_UNITS
    assert "5 molecules" in capsys.readouterr().out
