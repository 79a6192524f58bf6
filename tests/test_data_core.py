"""Dataset gathering, Batch, the HDF5 cache, splits and the DataModule."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eqbench import __version__
from eqbench.batch import Batch
from eqbench.data import AtomisticDataset, make_split, read_cache, write_cache
from eqbench.data.cache import fingerprint
from eqbench.data.datamodule import AtomisticDataModule, _identity
from eqbench.errors import DataError, MissingPropertyError, SplitError
from tests.conftest import PER_ATOM, UNITS, make_molecules


# ---------------------------------------------------------------------- per-molecule reference
def reference_batch(molecules, indices):
    """What a batch of ``indices`` must hold, built molecule by molecule from the raw lists."""
    numbers, positions, props = molecules
    n = len(numbers)
    z, pos, mol, targets = [], [], [], {k: [] for k in props}
    for b, index in enumerate(indices):
        index = index % n
        z += list(numbers[index])
        pos += [list(p) for p in positions[index]]
        mol += [b] * len(numbers[index])
        for key, values in props.items():
            if key in PER_ATOM:
                targets[key] += list(np.asarray(values[index]))
            else:
                targets[key].append(values[index])
    return {"z": z, "pos": pos, "batch": mol, "n_atoms": [len(numbers[i % n]) for i in indices],
            "idx": [i % n for i in indices], "targets": {k: np.array(v) for k, v in targets.items()}}


def assert_batch_equals(batch: Batch, ref: dict):
    assert batch.z.tolist() == ref["z"]
    assert batch.z.dtype == torch.long
    np.testing.assert_allclose(batch.pos.numpy(), np.array(ref["pos"]).reshape(-1, 3), rtol=1e-6, atol=1e-6)
    assert batch.batch.tolist() == ref["batch"]
    assert batch.n_atoms.tolist() == ref["n_atoms"]
    assert batch.idx.tolist() == ref["idx"]
    assert set(batch.targets) == set(ref["targets"])
    assert batch.per_atom == frozenset(PER_ATOM)
    for key, expected in ref["targets"].items():
        got = batch.targets[key].numpy()
        assert got.shape == expected.shape, key
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=key)
    assert batch.targets["n_carbon"].dtype == torch.int64  # integer properties stay integers


# ---------------------------------------------------------------------- dataset
def test_sizes(dataset, molecules):
    numbers = molecules[0]
    assert len(dataset) == len(numbers)
    assert dataset.n_atoms.tolist() == [len(z) for z in numbers]
    assert dataset.units == UNITS


@pytest.mark.parametrize("seed", range(4))
def test_getitems_equals_per_molecule_reference(dataset, molecules, seed):
    rng = np.random.default_rng(seed)
    n = len(dataset)
    for size in (1, 3, 8, 25):
        indices = rng.integers(0, n, size=size).tolist()  # unsorted, with repeats for size 25
        assert_batch_equals(dataset.__getitems__(indices), reference_batch(molecules, indices))
    indices = [5, 5, 5, 0, 11, 1, 1, 10]
    assert_batch_equals(dataset.__getitems__(indices), reference_batch(molecules, indices))
    assert_batch_equals(dataset.__getitems__(np.array([3, -1, 2])), reference_batch(molecules, [3, -1, 2]))
    assert_batch_equals(dataset[4], reference_batch(molecules, [4]))


def test_getitems_out_of_range(dataset):
    with pytest.raises(IndexError):
        dataset.__getitems__([0, len(dataset)])


def test_dataloader_with_datamodule_collate(dataset, molecules):
    loader = DataLoader(dataset, batch_size=5, shuffle=False, collate_fn=_identity)
    batches = list(loader)
    assert [len(b) for b in batches] == [5, 5, 2]
    for k, batch in enumerate(batches):
        assert isinstance(batch, Batch)
        assert_batch_equals(batch, reference_batch(molecules, list(range(5 * k, min(5 * k + 5, len(dataset))))))

    # shuffled: every molecule exactly once per epoch, each batch consistent with its own idx
    torch.manual_seed(0)
    seen = []
    for batch in DataLoader(dataset, batch_size=4, shuffle=True, collate_fn=_identity):
        assert_batch_equals(batch, reference_batch(molecules, batch.idx.tolist()))
        seen += batch.idx.tolist()
    assert sorted(seen) == list(range(len(dataset)))

    # through a Subset, as the DataModule builds its loaders
    from torch.utils.data import Subset

    chosen = [7, 2, 2, 9, 0]
    batch = next(iter(DataLoader(Subset(dataset, chosen), batch_size=5, collate_fn=_identity)))
    assert_batch_equals(batch, reference_batch(molecules, chosen))


def test_subset(dataset, molecules):
    chosen = [9, 1, 4, 4, 0]
    sub = dataset.subset(chosen)
    assert len(sub) == len(chosen)
    assert sub.offsets.tolist() == np.concatenate([[0], np.cumsum([len(molecules[0][i]) for i in chosen])]).tolist()
    assert sub.units == dataset.units
    assert {k: p.per_atom for k, p in sub.properties.items()} == {k: k in PER_ATOM for k in UNITS}
    # gathered from the subset == gathered from the reference at the chosen indices
    assert_batch_equals(sub.__getitems__(list(range(5))), {**reference_batch(molecules, chosen), "idx": list(range(5))})
    np.testing.assert_array_equal(sub.atomrefs["energy"], dataset.atomrefs["energy"])
    # a copy: changing the subset leaves the dataset alone
    sub.pos[:] = 0.0
    assert np.abs(dataset.pos).sum() > 0


def test_from_molecules_validates_row_counts(molecules):
    numbers, positions, props = molecules
    with pytest.raises(DataError, match="energy"):
        AtomisticDataset.from_molecules(numbers, positions, {"energy": props["energy"][:-1]}, {"energy": "eV"})


# ---------------------------------------------------------------------- Batch
def ase_frames():
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    numbers, positions, props = make_molecules([3, 1, 5, 3], seed=3)
    frames = []
    for b, (z, pos) in enumerate(zip(numbers, positions)):
        atoms = Atoms(numbers=z, positions=pos)
        atoms.calc = SinglePointCalculator(atoms, energy=props["energy"][b], forces=props["forces"][b],
                                           polarization=props["dipole"][b])
        atoms.info["gap"] = 0.1 * b
        atoms.arrays["charges_in"] = props["charges"][b]
        frames.append(atoms)
    return frames, numbers, positions, props


def test_batch_from_atoms():
    frames, numbers, positions, props = ase_frames()
    batch = Batch.from_atoms(frames, properties=["energy", "forces", "gap", "charges_in", "polarization"])
    assert batch.z.tolist() == [int(x) for z in numbers for x in z]
    np.testing.assert_allclose(batch.pos.numpy(), np.concatenate(positions), rtol=1e-6)
    assert batch.batch.tolist() == [b for b, z in enumerate(numbers) for _ in z]
    assert batch.n_atoms.tolist() == [3, 1, 5, 3]
    assert batch.per_atom == {"forces", "charges_in"}
    np.testing.assert_allclose(batch.targets["energy"].numpy(), props["energy"], rtol=1e-6)
    assert batch.targets["energy"].shape == (4,)
    np.testing.assert_allclose(batch.targets["forces"].numpy(), np.concatenate(props["forces"]), rtol=1e-6)
    np.testing.assert_allclose(batch.targets["charges_in"].numpy(), np.concatenate(props["charges"]), rtol=1e-6)
    np.testing.assert_allclose(batch.targets["gap"].numpy(), [0.0, 0.1, 0.2, 0.3], rtol=1e-6)
    # a per-molecule 3-vector on 3-atom molecules is still per molecule
    assert batch.targets["polarization"].shape == (4, 3)
    np.testing.assert_allclose(batch.targets["polarization"].numpy(), np.stack(props["dipole"]), rtol=1e-6)
    with pytest.raises(DataError, match="nope"):
        Batch.from_atoms(frames, properties=["nope"])


def test_batch_to_moves_and_converts():
    frames, *_ = ase_frames()
    batch = Batch.from_atoms(frames, properties=["energy", "forces"])
    batch.idx = torch.arange(4)
    moved = batch.to("meta")
    for t in (moved.z, moved.pos, moved.batch, moved.n_atoms, moved.idx, *moved.targets.values()):
        assert t.device.type == "meta"
    assert moved.per_atom == batch.per_atom and batch.pos.device.type == "cpu"  # the original stays put
    as64 = batch.to("cpu", dtype=torch.float64)
    assert as64.pos.dtype == as64.targets["forces"].dtype == torch.float64
    assert as64.z.dtype == as64.batch.dtype == torch.long  # integers are never converted
    torch.testing.assert_close(as64.pos, batch.pos.double())


def test_batch_collate(dataset, molecules):
    parts = [dataset.__getitems__([3, 1]), dataset.__getitems__([0]), dataset.__getitems__([7, 7])]
    assert_batch_equals(Batch.collate(parts), reference_batch(molecules, [3, 1, 0, 7, 7]))
    with pytest.raises(DataError):
        Batch.collate([])


# ---------------------------------------------------------------------- cache
def test_cache_round_trip_is_exact(dataset, tmp_path):
    for compression in (None, "gzip"):
        path = tmp_path / f"c-{compression}.h5"
        fp = write_cache(dataset, path, compression=compression)
        back = read_cache(path, validate=True)
        np.testing.assert_array_equal(back.z, dataset.z)
        assert back.pos.dtype == dataset.pos.dtype
        np.testing.assert_array_equal(back.pos, dataset.pos)
        np.testing.assert_array_equal(back.offsets, dataset.offsets)
        assert set(back.properties) == set(dataset.properties)
        for name, prop in dataset.properties.items():
            got = back.properties[name]
            assert got.unit == prop.unit == UNITS[name]
            assert got.per_atom is prop.per_atom
            assert got.values.dtype == prop.values.dtype
            np.testing.assert_array_equal(got.values, prop.values)
        assert set(back.atomrefs) == {"energy"}
        np.testing.assert_array_equal(back.atomrefs["energy"], dataset.atomrefs["energy"])
        assert back.metadata == {"method": "random test data", "n": 3, "eqbench_version": __version__}
        assert back.fingerprint == fp == fingerprint(back) == fingerprint(dataset)
        assert back.source == str(path)


def test_fingerprint_stable_and_sensitive(dataset, tmp_path):
    fp = write_cache(dataset, tmp_path / "a.h5")
    # rewriting (other path, other compression) and re-reading gives the same fingerprint
    assert write_cache(read_cache(tmp_path / "a.h5"), tmp_path / "b.h5", compression=None) == fp
    assert read_cache(tmp_path / "b.h5").fingerprint == fp
    assert len(fp) == 64 and int(fp, 16) >= 0

    def changed(edit) -> str:
        ds = read_cache(tmp_path / "a.h5")
        edit(ds)
        return fingerprint(ds)

    def bump(array: np.ndarray, index, delta: float) -> None:
        array[index] = array[index] + delta

    edits = {
        "one energy": lambda ds: bump(ds.properties["energy"].values, 3, 1e-9),
        "one force": lambda ds: bump(ds.properties["forces"].values, (5, 1), 0.25),
        "one position": lambda ds: bump(ds.pos, (2, 0), 1e-12),
        "one element": lambda ds: bump(ds.z, 0, 1),
        "a unit": lambda ds: setattr(ds.properties["energy"], "unit", "meV"),
        "per_atom flag": lambda ds: setattr(ds.properties["charges"], "per_atom", False),
        "an atom ref": lambda ds: bump(ds.atomrefs["energy"], 6, -0.2),
        "a property name": lambda ds: ds.properties.__setitem__("E", ds.properties.pop("energy")),
    }
    fingerprints = {name: changed(edit) for name, edit in edits.items()}
    for name, value in fingerprints.items():
        assert value != fp, f"fingerprint unchanged after changing {name}"
    assert len(set(fingerprints.values())) == len(edits)
    assert changed(lambda ds: None) == fp


def _fail_on_nth_dataset(monkeypatch, n: int):
    original = h5py.Group.create_dataset
    calls = {"n": 0}

    def create_dataset(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= n:
            raise RuntimeError("simulated crash while writing the cache")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)


@pytest.mark.parametrize("fail_at", [1, 3, 5])
def test_interrupted_write_leaves_nothing(dataset, tmp_path, monkeypatch, fail_at):
    path = tmp_path / "sub" / "cache.h5"
    with monkeypatch.context() as m:
        _fail_on_nth_dataset(m, fail_at)
        with pytest.raises(RuntimeError, match="simulated"):
            write_cache(dataset, path)
    assert not path.exists()
    assert list(path.parent.iterdir()) == []  # no temporary file left behind either
    with pytest.raises(DataError, match="not found"):
        read_cache(path)
    fp = write_cache(dataset, path)  # the next write succeeds
    assert read_cache(path).fingerprint == fp


def test_interrupted_rewrite_keeps_the_old_cache(dataset, tmp_path, monkeypatch):
    path = tmp_path / "cache.h5"
    fp = write_cache(dataset, path)
    other = dataset.subset([0, 1, 2])
    with monkeypatch.context() as m:
        _fail_on_nth_dataset(m, 4)
        with pytest.raises(RuntimeError):
            write_cache(other, path)
    assert read_cache(path).fingerprint == fp
    assert [p.name for p in tmp_path.iterdir()] == ["cache.h5"]


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    import h5py, numpy as np
    from eqbench.data import AtomisticDataset, Property, write_cache

    original = h5py.Group.create_dataset
    calls = [0]

    def create_dataset(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # z, pos, offsets written; properties half done
            sys.stdout.write("dying\\n"); sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    h5py.Group.create_dataset = create_dataset
    rng = np.random.default_rng(0)
    n_mol, n = 2000, 8
    pos = (np.arange(n_mol * n)[:, None] * 1.5 + np.zeros(3)).astype(float)
    properties = {"energy": Property(rng.normal(size=n_mol), "eV", False),
                  "forces": Property(rng.normal(size=(n_mol * n, 3)), "eV/Å", True)}
    ds = AtomisticDataset(z=np.ones(n_mol * n, int), pos=pos, offsets=np.arange(0, n_mol * n + 1, n),
                          properties=properties, validate=False)
    write_cache(ds, sys.argv[1])
    print("finished")
""")


def test_killed_build_leaves_no_valid_cache(dataset, tmp_path):
    path = tmp_path / "killed.h5"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == -9, proc.stderr
    assert "dying" in proc.stdout and "finished" not in proc.stdout
    assert not path.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("killed.h5.tmp")]
    assert len(leftovers) == 1  # the killed process could not clean up its temporary file
    with pytest.raises(DataError, match="not found"):
        read_cache(path)
    with pytest.raises(DataError, match="not a complete eqbench cache|not a readable HDF5"):
        read_cache(leftovers[0])
    # the same partial file under the final name is refused too
    os.replace(leftovers[0], path)
    with pytest.raises(DataError, match=str(path.name)):
        read_cache(path)
    # and the next build replaces it
    fp = write_cache(dataset, path)
    assert read_cache(path).fingerprint == fp


def test_file_without_complete_attribute_is_refused(cache_file):
    with h5py.File(cache_file, "r+") as f:
        del f.attrs["complete"]
    with pytest.raises(DataError, match="complete"):
        read_cache(cache_file)


# ---------------------------------------------------------------------- splits
@pytest.mark.parametrize("sizes,expected", [
    ({"train": 20, "val": 5, "test": 10}, (20, 5, 10)),
    ({"train": 20, "val": 5}, (20, 5, 15)),  # default test=None: the rest
    ({"train": 0.5, "val": 0.25, "test": None}, (20, 10, 10)),
    ({"train": None, "val": 3, "test": 0.1}, (33, 3, 4)),
    ({}, (32, 4, 4)),  # random defaults: 80 % / 10 % / rest
    ({"train": 40, "val": 0, "test": 0}, (40, 0, 0)),
])
def test_random_split_sizes_and_disjointness(tmp_path, sizes, expected):
    candidates = np.arange(100, 140)
    split = make_split(candidates, "random", 3, tmp_path, "fp", **sizes)
    assert split.sizes() == expected
    parts = [split.train.tolist(), split.val.tolist(), split.test.tolist()]
    union = set().union(*parts)
    assert sum(len(p) for p in parts) == len(union)  # disjoint, no repeats
    assert union <= set(candidates.tolist())
    if sum(expected) == len(candidates):
        assert union == set(candidates.tolist())


def test_split_covers_only_candidates(tmp_path):
    candidates = np.array([3, 8, 11, 17, 20, 24, 31, 40, 55, 60])
    split = make_split(candidates, "random", 0, None, None, train=5, val=2)
    assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == candidates.tolist()
    assert split.path is None


def test_split_seeds(tmp_path):
    candidates = np.arange(200)
    a = make_split(candidates, "random", 1, tmp_path / "a", None, train=100, val=50)
    b = make_split(candidates, "random", 1, tmp_path / "b", None, train=100, val=50)
    c = make_split(candidates, "random", 2, tmp_path / "c", None, train=100, val=50)
    for x, y in zip((a.train, a.val, a.test), (b.train, b.val, b.test)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.train, c.train)
    assert a.path.name != c.path.name and "seed1" in a.path.name and "seed2" in c.path.name


def test_split_file_written_once_and_reused(tmp_path):
    candidates = np.arange(50)
    first = make_split(candidates, "random", 0, tmp_path, "fp-1", train=30, val=10)
    assert first.path.parent == tmp_path and first.path.is_file() and first.path.suffix == ".npz"
    content = first.path.read_bytes()
    mtime = first.path.stat().st_mtime_ns
    time.sleep(0.02)
    # reused even if the candidates would now give another permutation
    again = make_split(candidates[::-1].copy(), "random", 0, tmp_path, "fp-1", train=30, val=10)
    assert again.path == first.path
    assert first.path.stat().st_mtime_ns == mtime
    assert first.path.read_bytes() == content
    np.testing.assert_array_equal(again.train, first.train)
    np.testing.assert_array_equal(again.test, first.test)
    with np.load(first.path) as f:  # the file holds the indices and what they were made for
        np.testing.assert_array_equal(f["val"], first.val)
        assert str(f["fingerprint"]) == "fp-1" and int(f["seed"]) == 0 and str(f["protocol"]) == "random"
    # other sizes → another file
    other = make_split(candidates, "random", 0, tmp_path, "fp-1", train=20, val=10)
    assert other.path != first.path and len(list(tmp_path.glob("*.npz"))) == 2
    assert not list(tmp_path.glob("*tmp*"))


def test_split_for_another_dataset_is_refused(tmp_path):
    split = make_split(np.arange(30), "random", 0, tmp_path, "a" * 64, train=10, val=5)
    with pytest.raises(SplitError, match="another dataset") as err:
        make_split(np.arange(30), "random", 0, tmp_path, "b" * 64, train=10, val=5)
    assert split.path.name in str(err.value)


def test_split_larger_than_dataset(tmp_path):
    with pytest.raises(SplitError) as err:
        make_split(np.arange(30), "random", 0, tmp_path, "fp", train=25, val=10)
    message = str(err.value)
    assert "25" in message and "10" in message and "30" in message and "35" in message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SplitError, match="unknown split protocol"):
        make_split(np.arange(30), "nope", 0, tmp_path, "fp")


# ---------------------------------------------------------------------- DataModule
def test_datamodule_end_to_end(grid_dataset, tmp_path):
    path = tmp_path / "grid" / "grid.h5"
    fp = write_cache(grid_dataset, path)
    dm = AtomisticDataModule(str(path), batch_size=4, eval_batch_size=7, train_size=24, val_size=8, seed=5)
    dm.setup("fit")
    assert dm.dataset.fingerprint == fp
    assert dm.split.sizes() == (24, 8, 8)
    assert dm.split.path.parent == path.parent / "grid.splits"  # default: beside the cache
    assert dm.split.path.is_file()
    assert dm.units == {"energy": "eV", "n_carbon": "", "forces": "eV/Å"}

    train = list(dm.train_dataloader())
    assert [len(b) for b in train] == [4] * 6
    assert sorted(i for b in train for i in b.idx.tolist()) == sorted(dm.split.train.tolist())
    val = list(dm.val_dataloader())
    assert [len(b) for b in val] == [7, 1]
    assert [i for b in val for i in b.idx.tolist()] == dm.split.val.tolist()  # not shuffled
    test = list(dm.test_dataloader())
    assert [i for b in test for i in b.idx.tolist()] == dm.split.test.tolist()
    for batch in train + val + test:  # energies were set to the molecule index
        np.testing.assert_array_equal(batch.targets["energy"].numpy(), batch.idx.numpy().astype(float))
        assert batch.targets["forces"].shape == (int(batch.n_atoms.sum()), 3)
    assert len(dm.train_dataset) == 24
    np.testing.assert_array_equal(dm.train_dataset.properties["energy"].values, dm.split.train.astype(float))

    # a second DataModule reuses the split file
    dm2 = AtomisticDataModule(str(path), batch_size=4, train_size=24, val_size=8, seed=5)
    dm2.setup("fit")
    np.testing.assert_array_equal(dm2.split.train, dm.split.train)
    assert dm2.split.path == dm.split.path
    # another seed, another split
    dm3 = AtomisticDataModule(str(path), batch_size=4, train_size=24, val_size=8, seed=6)
    dm3.setup("fit")
    assert dm3.split.path != dm.split.path
    assert not np.array_equal(dm3.split.train, dm.split.train)


def test_datamodule_subset(grid_dataset, tmp_path):
    path = tmp_path / "grid.h5"
    write_cache(grid_dataset, path)
    dm = AtomisticDataModule(str(path), batch_size=5, subset={"n_carbon": [1, 3]}, train_size=12, val_size=4)
    dm.setup()
    allowed = {b for b in range(40) if b % 4 in (1, 3)}
    assert dm.split.sizes() == (12, 4, 4)
    assert set(np.concatenate([dm.split.train, dm.split.val, dm.split.test]).tolist()) == allowed
    for batch in dm.train_dataloader():
        assert set(batch.targets["n_carbon"].tolist()) <= {1, 3}
    # the subset has its own split file
    full = AtomisticDataModule(str(path), batch_size=5, train_size=12, val_size=4)
    full.setup()
    assert full.split.path != dm.split.path
    with pytest.raises(MissingPropertyError, match="nope"):
        AtomisticDataModule(str(path), subset={"nope": [1]}).setup()
    with pytest.raises(DataError, match="selects no molecules"):
        AtomisticDataModule(str(path), subset={"n_carbon": [7]}).setup()


def test_datamodule_split_dir_and_too_large_split(grid_dataset, tmp_path):
    path = tmp_path / "grid.h5"
    write_cache(grid_dataset, path)
    dm = AtomisticDataModule(str(path), train_size=10, val_size=5, split_dir=str(tmp_path / "splits"))
    dm.setup()
    assert dm.split.path.parent == tmp_path / "splits"
    with pytest.raises(SplitError, match="40"):
        AtomisticDataModule(str(path), train_size=30, val_size=20).setup()



def test_datamodule_worker_processes_give_the_same_batches(grid_dataset, tmp_path):
    path = tmp_path / "grid.h5"
    write_cache(grid_dataset, path)
    batches = {}
    for workers in (0, 2):
        dm = AtomisticDataModule(str(path), batch_size=5, train_size=24, val_size=8, seed=1, num_workers=workers)
        dm.setup("fit")
        batches[workers] = list(dm.val_dataloader())
    assert len(batches[0]) == len(batches[2]) == 2
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a.idx, b.idx) and torch.equal(a.pos, b.pos)
        assert torch.equal(a.targets["forces"], b.targets["forces"])
