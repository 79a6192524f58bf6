"""QM7-X from files written here in the published layout (f[idmol][idconf], xz-compressed like the
Zenodo files, with DupMols.dat), and the QM7-X250 protocols of So3krates."""

from __future__ import annotations

import lzma
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from eqbench.data import Property, read, read_cache
from eqbench.data.download import OfflineError, SourceChecksumWarning
from eqbench.data.qm7x import prepare, qm7x250_molecules, qm7x250_split
from eqbench.errors import DataError, SplitError


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("tests never use the network")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


# Conformations: (file set, idmol, idconf, atomic numbers). Every value below is what the test writes.
CONFS = [
    ("1000", "1", "Geom-m1-i1-c1-opt", [6, 1, 1, 1, 1]),
    ("1000", "1", "Geom-m1-i1-c1-d1", [6, 1, 1, 1, 1]),
    ("1000", "1", "Geom-m1-i1-c1-d2", [6, 1, 1, 1, 1]),
    ("1000", "2", "Geom-m2-i1-c1-opt", [8, 1, 1]),
    ("1000", "2", "Geom-m2-i1-c1-d1", [8, 1, 1]),
    ("1000", "2", "Geom-m2-i1-c2-opt", [8, 1, 1]),  # listed in DupMols.dat: dropped with its displacement
    ("1000", "2", "Geom-m2-i1-c2-d1", [8, 1, 1]),
    ("2000", "3", "Geom-m3-i2-c4-opt", [7, 1, 1, 1]),
    ("2000", "3", "Geom-m3-i2-c4-d7", [7, 1, 1, 1]),
]
DUPMOLS = "Geom-m2-i1-c2-opt\nGeom-m99-i1-c1-opt\n"


def values_of(k: int, n: int) -> dict[str, np.ndarray]:
    """Distinct, recognisable values for conformation k with n atoms."""
    pos = np.array([[1.1 * a + 0.01 * k, 0.3 * a, -0.2 * a + 0.05 * k] for a in range(n)])
    return {"atXYZ": pos, "totFOR": np.arange(3 * n).reshape(n, 3) * 0.1 + k,
            "ePBE0+MBD": np.array([-1000.5 - k]), "eAT": np.array([-40.25 - k]),
            "vDIP": np.array([0.1 * k, 0.2, -0.3]), "mTPOL": np.arange(9.0).reshape(3, 3) + k,
            "HLgap": np.array([7.5 + 0.1 * k])}


def write_set(path: Path, name: str, skip: tuple[str, ...] = ()) -> None:
    with h5py.File(path, "w") as f:
        for k, (file_set, mol, conf, z) in enumerate(CONFS):
            if file_set != name:
                continue
            group = f.require_group(mol).create_group(conf)
            group.create_dataset("atNUM", data=np.array(z))
            for key, value in values_of(k, len(z)).items():
                if key not in skip:
                    group.create_dataset(key, data=value)
            group.create_dataset("ePBE0", data=np.array([-999.0]))  # other datasets are ignored


def xz(path: Path, target: Path) -> None:
    target.write_bytes(lzma.compress(path.read_bytes()))
    path.unlink()


@pytest.fixture
def qm7x_dir(tmp_path) -> Path:
    directory = tmp_path / "qm7x"
    directory.mkdir()
    for name in ("1000", "2000"):
        write_set(directory / f"{name}.hdf5", name)
        xz(directory / f"{name}.hdf5", directory / f"{name}.xz")
    (directory / "DupMols.dat").write_text(DUPMOLS)
    return directory


def quiet_prepare(*args, **kwargs) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SourceChecksumWarning)  # test files, not the published ones
        return prepare(*args, **kwargs)


ALL = ["energy", "forces", "atomization_energy", "dipole", "polarizability", "hl_gap"]


def test_xz_files_in_the_published_layout(qm7x_dir):
    out = quiet_prepare(qm7x_dir, properties=ALL, sets=("1000", "2000"), download=False)
    assert out == qm7x_dir / "qm7x.h5"
    # only the cache was added: the decompressed temporary files are gone
    assert sorted(p.name for p in qm7x_dir.iterdir()) == ["1000.xz", "2000.xz", "DupMols.dat", "qm7x.h5"]
    ds = read_cache(out, validate=True)
    assert len(ds) == 7 and ds.metadata["duplicates_dropped"] == 2
    p = {k: v.values for k, v in ds.properties.items()}
    ids = list(zip(p["mol_id"], p["isomer_id"], p["conformer_id"], p["step"]))
    assert sorted(ids) == [(1, 1, 1, 0), (1, 1, 1, 1), (1, 1, 1, 2), (2, 1, 1, 0), (2, 1, 1, 1), (3, 2, 4, 0),
                           (3, 2, 4, 7)]
    assert ds.units == {"mol_id": "", "isomer_id": "", "conformer_id": "", "step": "", "energy": "eV",
                        "forces": "eV/Å", "atomization_energy": "eV", "dipole": "e Å", "polarizability": "a0^3",
                        "hl_gap": "eV"}
    for k, (_, mol, conf, z) in enumerate(CONFS):
        if "-m2-i1-c2-" in conf:
            assert (int(mol), 1, 2) not in [i[:3] for i in ids]
            continue
        step = 0 if conf.endswith("opt") else int(conf.rsplit("-d", 1)[1])
        b = ids.index((int(mol), int(conf.split("-i")[1][0]), int(conf.split("-c")[1][0]), step))
        a, e = ds.offsets[b], ds.offsets[b + 1]
        assert ds.z[a:e].tolist() == z
        written = values_of(k, len(z))
        assert p["energy"][b] == -1000.5 - k and p["atomization_energy"][b] == -40.25 - k  # eV
        assert p["hl_gap"][b] == 7.5 + 0.1 * k
        np.testing.assert_array_equal(ds.pos[a:e], written["atXYZ"])  # Å
        np.testing.assert_array_equal(p["forces"][a:e], written["totFOR"])  # eV/Å
        np.testing.assert_array_equal(p["dipole"][b], [0.1 * k, 0.2, -0.3])
        np.testing.assert_array_equal(p["polarizability"][b], np.arange(9.0).reshape(3, 3) + k)
    assert p["polarizability"].shape == (7, 3, 3) and p["dipole"].shape == (7, 3)


def test_default_properties_and_other_file_names(qm7x_dir):
    (qm7x_dir / "1000.xz").rename(qm7x_dir / "1000.hdf5.xz")  # renamed by the user
    (qm7x_dir / "2000.hdf5").write_bytes(lzma.decompress((qm7x_dir / "2000.xz").read_bytes()))
    (qm7x_dir / "2000.xz").unlink()  # already decompressed by the user
    ds = read_cache(quiet_prepare(qm7x_dir, sets=("1000", "2000"), download=False))
    assert set(ds.properties) == {"energy", "forces", "mol_id", "isomer_id", "conformer_id", "step"}
    assert len(ds) == 7 and (qm7x_dir / "2000.hdf5").is_file()


def test_truncated_xz_is_named_and_leaves_no_cache_or_temporary_file(qm7x_dir):
    data = (qm7x_dir / "2000.xz").read_bytes()
    (qm7x_dir / "2000.xz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="2000.xz is not a complete xz file.*download it again"):
        quiet_prepare(qm7x_dir, sets=("1000", "2000"), download=False)
    assert sorted(p.name for p in qm7x_dir.iterdir()) == ["1000.xz", "2000.xz", "DupMols.dat"]


def test_xz_of_something_else_and_missing_datasets_are_named(qm7x_dir):
    (qm7x_dir / "2000.xz").write_bytes(lzma.compress(b"not an HDF5 file" * 100))
    with pytest.raises(DataError, match="2000.xz is not a readable HDF5 file"):
        quiet_prepare(qm7x_dir, sets=("1000", "2000"), download=False)
    write_set(qm7x_dir / "2000.hdf5", "2000", skip=("totFOR",))
    xz(qm7x_dir / "2000.hdf5", qm7x_dir / "2000.xz")
    with pytest.raises(DataError, match=r"3/Geom-m3-i2-c4-d7: dataset missing.*totFOR"):
        quiet_prepare(qm7x_dir, sets=("1000", "2000"), download=False)
    assert sorted(p.name for p in qm7x_dir.iterdir()) == ["1000.xz", "2000.xz", "DupMols.dat"]


def test_missing_files_offline_say_what_to_place_where(qm7x_dir):
    with pytest.raises(OfflineError) as err:
        quiet_prepare(qm7x_dir, sets=("1000", "2000", "8000"))
    message = str(err.value)
    assert "8000.xz" in message and str(qm7x_dir) in message and "zenodo.org/records/4288677" in message
    assert "c893ae88b8f5c32541c3f024fc1daa45" in message and "1000.xz (" not in message
    assert not (qm7x_dir / "qm7x.h5").exists()


def test_named_qm7x_in_the_datamodule_and_groups_from_the_data_root(qm7x_dir, monkeypatch):
    from eqbench.data.datamodule import AtomisticDataModule

    monkeypatch.setenv("EQBENCH_DATA", str(qm7x_dir.parent))
    quiet_prepare(qm7x_dir, sets=("1000", "2000"), download=False)  # what read("qm7x") would do with all sets
    ds = read("qm7x")
    dm = AtomisticDataModule("qm7x", split="random", train_size=4, val_size=1, batch_size=2)
    dm.setup("fit")
    assert dm.split.sizes() == (4, 1, 2) and dm.units["forces"] == "eV/Å"
    # the protocol finds the molecule ids in the data root's cache
    train, val, test = qm7x250_split(np.arange(len(ds)), 0, structures=1, train=1, val=1)
    mol = ds.properties["mol_id"].values
    assert len(train) == len(val) == 1 and len(np.unique(mol[np.concatenate([train, val, test])])) == 1


# ---------------------------------------------------------------------- QM7-X250 protocols
def synthetic_groups(seed: int = 0) -> np.ndarray:
    """Molecule id per structure, shuffled: 320 molecules with 101-500 structures, 30 with fewer than 91."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([rng.integers(101, 500, size=320), rng.integers(20, 90, size=30)])
    return rng.permutation(np.repeat(np.arange(1, len(sizes) + 1) * 3, sizes))  # ids need not be contiguous


def test_qm7x250_joint_sizes_per_molecule():
    groups = synthetic_groups()
    candidates = np.arange(len(groups))
    train, val, test = qm7x250_split(candidates, 7, groups=groups)
    chosen = qm7x250_molecules(groups, 7)
    assert len(chosen) == 250 and (np.unique(groups, return_counts=True)[1][np.isin(np.unique(groups), chosen)]
                                   >= 91).all()
    assert (len(train), len(val)) == (250 * 80, 250 * 10)
    assert len(test) == np.isin(groups, chosen).sum() - 250 * 90
    union = np.concatenate([train, val, test])
    assert len(np.unique(union)) == len(union) and set(groups[union]) == set(chosen)
    assert (np.unique(groups[train], return_counts=True)[1] == 80).all()
    assert (np.unique(groups[val], return_counts=True)[1] == 10).all()
    again = qm7x250_split(candidates, 7, groups=groups)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert set(qm7x250_molecules(groups, 8)) != set(chosen)


def test_qm7x250_individual_is_the_joint_split_of_one_molecule():
    groups = synthetic_groups()
    joint = qm7x250_split(np.arange(len(groups)), 3, groups=groups)
    mol = qm7x250_molecules(groups, 3)[17]
    mine = np.flatnonzero(groups == mol)  # what the DataModule's subset {mol_id: [mol]} leaves
    train, val, test = qm7x250_split(mine, 3, mode="individual", groups=groups)
    assert (len(train), len(val), len(test)) == (80, 10, len(mine) - 90)
    assert set(train) == set(joint[0][groups[joint[0]] == mol]) and set(val) == set(joint[1][groups[joint[1]] == mol])
    outsider = np.setdiff1d(np.unique(groups), qm7x250_molecules(groups, 3))[0]
    with pytest.raises(SplitError, match="not one of the QM7-X250 molecules"):
        qm7x250_split(np.flatnonzero(groups == outsider), 3, mode="individual", groups=groups)
    with pytest.raises(SplitError, match=r"subset: \{mol_id: \[ID\]\}"):
        qm7x250_split(np.arange(len(groups)), 3, mode="individual", groups=groups)


def test_qm7x250_unseen_molecules():
    groups = synthetic_groups()
    candidates = np.arange(len(groups))
    joint = qm7x250_split(candidates, 5, groups=groups)
    train, val, test = qm7x250_split(candidates, 5, mode="unseen", groups=groups)
    assert np.array_equal(train, joint[0]) and np.array_equal(val, joint[1])
    unseen = np.unique(groups[test])
    assert len(unseen) == 25 and not np.isin(unseen, qm7x250_molecules(groups, 5)).any()
    assert len(test) == np.isin(groups, unseen).sum()  # every structure of those molecules


def test_qm7x250_scaled_and_too_small():
    groups = synthetic_groups()
    train, val, test = qm7x250_split(np.arange(len(groups)), 0, structures=10, train=8, val=2, test=50, groups=groups)
    assert (len(train), len(val), len(test)) == (80, 20, 50)
    with pytest.raises(SplitError, match="needs 400 molecules"):
        qm7x250_split(np.arange(len(groups)), 0, structures=400, groups=groups)
    with pytest.raises(SplitError, match="counts per molecule"):
        qm7x250_split(np.arange(len(groups)), 0, train=0.8, groups=groups)


def test_qm7x250_groups_come_from_the_dataset_being_split(tmp_path, monkeypatch):
    from eqbench.data import AtomisticDataset, write_cache
    from eqbench.data.datamodule import AtomisticDataModule

    monkeypatch.setenv("EQBENCH_DATA", str(tmp_path / "empty"))  # no QM7-X cache under the data root
    groups = synthetic_groups()
    n = len(groups)
    pos = np.tile(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.1]]), (n, 1))
    ds = AtomisticDataset(z=np.tile([6, 8], n), pos=pos, offsets=np.arange(0, 2 * n + 1, 2),
                          properties={"mol_id": Property(groups, "", False)}, validate=False)
    write_cache(ds, tmp_path / "my_qm7x.h5")
    dm = AtomisticDataModule(str(tmp_path / "my_qm7x.h5"), split="qm7x-250", seed=7)
    dm.setup("fit")
    expected = qm7x250_split(np.arange(n), 7, groups=groups)
    assert all(np.array_equal(a, b) for a, b in zip((dm.split.train, dm.split.val, dm.split.test), expected))
