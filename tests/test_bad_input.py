"""Errors a user can cause: each is an EqbenchError that names the file/index/key, says what to do, and
leaves nothing half-written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from eqbench.batch import Batch
from eqbench.cli import main
from eqbench.data import AtomisticDataset, make_split, read, read_cache, write_cache
from eqbench.data.datamodule import AtomisticDataModule
from eqbench.data.splits import load_split
from eqbench.errors import DataError, EqbenchError, MissingPropertyError, ModelError, SplitError
from tests.conftest import make_molecules

# Phrases that tell the user what to do next.
ADVICE = ("check", "delete", "fix", "remove", "rebuild", "choose", "pass", "prepare", "use", "must")


def assert_helpful(err: EqbenchError, *names: str):
    message = str(err)
    for name in names:
        assert str(name) in message, f"{name!r} not named in: {message}"
    assert any(word in message.lower() for word in ADVICE), f"no advice in: {message}"
    assert "Traceback" not in message


def only(directory, *names):
    """The directory holds exactly ``names`` (nothing half-written beside them)."""
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)


def prepare(src, out, *extra) -> int:
    return main(["data", "prepare", str(src), "--out", str(out), *extra])


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("EQBENCH_DEBUG", raising=False)


# ---------------------------------------------------------------------- missing and unreadable files
@pytest.mark.parametrize("name", ["missing.h5", "missing.extxyz", "missing.db", "missing.npz"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(DataError) as err:
        read(path)
    assert_helpful(err.value, path)
    with pytest.raises(DataError) as err:
        read_cache(path)
    assert_helpful(err.value, path)
    with pytest.raises(DataError) as err:
        AtomisticDataModule(str(path)).setup()
    assert_helpful(err.value, path)
    only(tmp_path)


def test_cli_missing_file_exits_2_without_traceback(tmp_path, capsys):
    path = tmp_path / "nowhere.extxyz"
    out = tmp_path / "out.h5"
    assert prepare(path, out, "--units", "energy=eV") == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("eqbench: error: ")
    assert str(path) in captured.err and "Traceback" not in captured.err + captured.out
    only(tmp_path)
    assert main(["data", "info", str(tmp_path / "nope.h5")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("eqbench: error: ") and "nope.h5" in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_random_bytes_as_hdf5(tmp_path):
    path = tmp_path / "noise.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    for reader in (read, read_cache):
        with pytest.raises(DataError) as err:
            reader(path)
        assert_helpful(err.value, path)
    with pytest.raises(DataError):
        AtomisticDataModule(str(path)).setup()
    only(tmp_path, "noise.h5")  # no split directory made for a file that could not be read


def _read_as_nobody(path: Path) -> tuple[int, str]:
    """read_cache(path) in a forked child that dropped root's privileges (uid/gid 65534): (exit code, message)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                read_cache(path)
                code = 0
            except DataError as err:
                os.write(write_end, str(err).encode())
                code = 3
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), message


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX file permissions")
def test_unreadable_file(cache_file):
    if os.geteuid() != 0:
        cache_file.chmod(0)
        try:
            with pytest.raises(DataError) as err:
                read_cache(cache_file)
            assert_helpful(err.value, cache_file)
        finally:
            cache_file.chmod(0o644)
        return
    # Root reads any file: read it as an unprivileged user instead, from a directory that user may enter
    # (pytest's base directory is private to root), so that the file's own permissions refuse it.
    directory = Path(tempfile.mkdtemp(prefix="eqbench-unreadable-"))
    try:
        directory.chmod(0o755)
        path = directory / cache_file.name
        path.write_bytes(cache_file.read_bytes())
        path.chmod(0)
        code, message = _read_as_nobody(path)
        assert code == 3, message
        assert "Permission denied" in message
        assert_helpful(DataError(message), path)
        path.chmod(0o644)
        assert _read_as_nobody(path) == (0, "")  # readable again: the permissions were the only obstacle
    finally:
        shutil.rmtree(directory)


def test_hdf5_that_is_not_a_cache(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(DataError) as err:
        read_cache(path)
    assert_helpful(err.value, path)


@pytest.mark.parametrize("fraction", [0.2, 0.6, 0.95])
def test_truncated_cache(cache_file, fraction):
    data = cache_file.read_bytes()
    cache_file.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(DataError) as err:
        read_cache(cache_file)
    assert_helpful(err.value, cache_file)


def test_damaged_cache_is_never_used(dataset, tmp_path):
    # Random damage anywhere in a cache either leaves its content intact or is reported as DataError:
    # never another exception, never silently different data.
    path = tmp_path / "c.h5"
    write_cache(dataset, path, compression=None)
    clean = path.read_bytes()
    rng = np.random.default_rng(1)
    outcomes = set()
    for offset in range(0, len(clean), max(len(clean) // 150, 1)):
        damaged = bytearray(clean)
        damaged[offset:offset + 24] = rng.bytes(len(damaged[offset:offset + 24]))
        path.write_bytes(bytes(damaged))
        try:
            back = read_cache(path)
        except DataError as err:
            assert str(path) in str(err)
            outcomes.add("error")
            continue
        outcomes.add("read")
        np.testing.assert_array_equal(back.pos, dataset.pos)
        np.testing.assert_array_equal(back.z, dataset.z)
        for name, prop in dataset.properties.items():
            np.testing.assert_array_equal(back.properties[name].values, prop.values)
    assert "error" in outcomes


def test_corrupt_npz(tmp_path):
    # There is no npz dataset reader yet (MD17/rMD17 to come): an .npz given to read() is refused by name,
    # and split files (the npz eqbench does read) report damage as SplitError.
    fake = tmp_path / "md17_noise.npz"
    fake.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(DataError) as err:
        read(fake)
    assert_helpful(err.value, fake)
    with pytest.raises(Exception) as err:  # what numpy itself does with these bytes
        np.load(fake)
    assert not isinstance(err.value, EqbenchError)

    split = make_split(np.arange(50), "random", 0, tmp_path / "splits", "fp", train=30, val=10)
    good = split.path.read_bytes()
    for damaged in (np.random.default_rng(1).bytes(2048), good[: len(good) // 2], good[:10], b""):
        split.path.write_bytes(damaged)
        with pytest.raises(SplitError) as err:
            load_split(split.path, "fp")
        assert_helpful(err.value, split.path)
        with pytest.raises(SplitError):  # a DataModule-style call reuses the file and reports it the same way
            make_split(np.arange(50), "random", 0, tmp_path / "splits", "fp", train=30, val=10)


@pytest.mark.parametrize("content", [
    b"3\nenergy=1.0 Properties=species:S:1:pos:R:3\nH 0 0 0\nH 1 0 0\n",  # fewer atoms than announced
    b"two\n\nH 0 0 0\n",  # not a count
    b"2\nProperties=species:S:1:pos:R:3\nH 0 0\nH 1 0 0\n",  # a missing coordinate
    b"1\nProperties=species:S:1:pos:R:3\nXx 0 0 0\n",  # not an element
])
def test_corrupt_extxyz(tmp_path, content):
    path = tmp_path / "bad.extxyz"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read(path, units={"energy": "eV"})
    assert_helpful(err.value, path)
    assert prepare(path, tmp_path / "out.h5", "--units", "energy=eV") == 2
    only(tmp_path, "bad.extxyz")


def test_random_bytes_as_extxyz_and_db(tmp_path):
    noise = np.random.default_rng(2).bytes(3000)
    for name in ("noise.extxyz", "noise.db"):
        path = tmp_path / name
        path.write_bytes(noise)
        with pytest.raises(DataError) as err:
            read(path, units={"energy": "eV"})
        assert_helpful(err.value, path)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "frames.dat"
    path.write_text("1\n\nH 0 0 0\n")
    with pytest.raises(DataError) as err:
        read(path)
    assert_helpful(err.value, path, ".dat", "format")


# ---------------------------------------------------------------------- missing properties
def test_missing_required_property(dataset):
    dataset.require(["energy", "forces"])  # present: no error
    with pytest.raises(MissingPropertyError) as err:
        dataset.require(["energy", "homo"])
    assert isinstance(err.value, DataError) and isinstance(err.value, KeyError)
    assert_helpful(err.value, "'homo'", "available", "'energy'", "'forces'")
    assert "energy'] not in" not in str(err.value)  # only the missing one is reported as missing


def test_property_missing_from_one_frame(tmp_path):
    frames = [Atoms("H2", positions=[[0, 0, 0], [0.0, 0, 0.74 + 0.01 * b]]) for b in range(4)]
    for b, atoms in enumerate(frames):
        atoms.info["energy"] = -1.0 - b
        if b != 2:
            atoms.info["gap"] = 0.5
    src = tmp_path / "frames.extxyz"
    write(src, frames, format="extxyz")
    with pytest.raises(DataError) as err:
        read(src, units={"energy": "eV", "gap": "eV"})
    assert_helpful(err.value, src, "structure 2", "'gap'")
    assert prepare(src, tmp_path / "out.h5", "--units", "energy=eV", "gap=eV") == 2
    only(tmp_path, "frames.extxyz")
    ds = read(src, units={"energy": "eV"}, properties=["energy"])  # what the message suggests
    assert ds.properties["energy"].values.tolist() == [-1.0, -2.0, -3.0, -4.0]


def test_datamodule_subset_on_missing_property(cache_file):
    with pytest.raises(MissingPropertyError) as err:
        AtomisticDataModule(str(cache_file), subset={"n_oxygen": [1]}).setup()
    assert_helpful(err.value, "n_oxygen", cache_file)


def _fit_on(cache_file, tmp_path, **task_kwargs):
    import lightning.pytorch as pl

    from eqbench.models import create
    from eqbench.task import AtomisticTask, Target

    rep = create("schnet", n_features=8, n_interactions=1, n_rbf=4, cutoff=3.0)
    task = AtomisticTask(rep, [Target("energy"), Target("homo")], **task_kwargs)
    dm = AtomisticDataModule(str(cache_file), batch_size=4, train_size=6, val_size=3)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(task, dm)


def test_task_asking_for_a_missing_target(cache_file, tmp_path):
    with pytest.raises(MissingPropertyError) as err:
        _fit_on(cache_file, tmp_path)
    assert_helpful(err.value, "'homo'", cache_file)


def test_task_asking_for_a_missing_target_without_standardisation(cache_file, tmp_path):
    with pytest.raises(MissingPropertyError) as err:
        _fit_on(cache_file, tmp_path, standardize=False)
    assert_helpful(err.value, "'homo'", cache_file)


# ---------------------------------------------------------------------- invalid molecules
def invalid(kind: str):
    numbers, positions, props = make_molecules([3, 4, 5, 2], seed=4)
    if kind == "nan":
        positions[2][1, 0] = np.nan
    elif kind == "inf":
        positions[2][1, 2] = -np.inf
    elif kind == "same position":
        positions[2][3] = positions[2][1] + 1e-4
    elif kind == "Z=0":
        numbers[2][1] = 0
    elif kind == "Z=150":
        numbers[2][1] = 150
    elif kind == "no atoms":
        numbers[2], positions[2] = numbers[2][:0], positions[2][:0]
    return numbers, positions, props


MESSAGES = {"nan": "NaN", "inf": "infinite", "same position": "same position", "Z=0": "Z=0", "Z=150": "Z=150",
            "no atoms": "no atoms"}


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_invalid_molecule_in_memory(kind):
    numbers, positions, props = invalid(kind)
    with pytest.raises(DataError) as err:
        AtomisticDataset.from_molecules(numbers, positions, {"energy": props["energy"]}, {"energy": "eV"},
                                        source="mydata.extxyz")
    assert_helpful(err.value, "mydata.extxyz", "molecule 2", MESSAGES[kind])


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_invalid_molecule_in_a_file(tmp_path, kind):
    numbers, positions, props = invalid(kind)
    bad_z = kind in ("Z=0", "Z=150")
    frames = []
    for b, (z, pos) in enumerate(zip(numbers, positions, strict=True)):
        atoms = Atoms(numbers=np.where(z > 118, 6, z), positions=pos)  # ASE writes Z=0 as "X"
        atoms.info["energy"] = props["energy"][b]
        frames.append(atoms)
    src = tmp_path / "frames.extxyz"
    write(src, frames, format="extxyz")
    if kind == "Z=150":  # ASE cannot write this element: put it in the file by hand
        lines = src.read_text().splitlines()
        line = (2 + 3) + (2 + 4) + 2 + 1  # count and comment lines and atoms of molecules 0, 1; atom 1 of mol 2
        assert lines[line].split()[0] == "C"
        lines[line] = "150" + lines[line][1:]
        src.write_text("\n".join(lines) + "\n")
    if bad_z:
        assert src.read_text().count("X " if kind == "Z=0" else "150 ") == 1
    out = tmp_path / "cache" / "out.h5"
    try:
        read(src, units={"energy": "eV"})
    except DataError as err:
        assert_helpful(err, src)
    else:
        pytest.fail(f"{kind}: read() accepted the file")
    assert prepare(src, out, "--units", "energy=eV") == 2
    assert not out.exists() and (not out.parent.exists() or not list(out.parent.iterdir()))


def test_batch_from_atoms_with_empty_molecule():
    with pytest.raises(DataError) as err:
        Batch.from_atoms([Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]]), Atoms()])
    assert_helpful(err.value, "structure 1", "no atoms")
    with pytest.raises(DataError):
        Batch.from_atoms([])


# ---------------------------------------------------------------------- splits and models
def test_split_larger_than_dataset(cache_file, dataset):
    n = len(dataset)
    with pytest.raises(SplitError) as err:
        AtomisticDataModule(str(cache_file), train_size=n, val_size=5).setup()
    assert_helpful(err.value, f"train={n}", "val=5", f"need {n + 5}", f"has {n}")
    assert not (cache_file.parent / "small.splits").exists() or not list((cache_file.parent / "small.splits")
                                                                          .iterdir())


def test_unknown_model_name():
    from eqbench.models import create

    with pytest.raises(ModelError) as err:
        create("nope")
    assert_helpful(err.value, "'nope'", "schnet")
    with pytest.raises(ModelError) as err:
        create("schnet", n_feature=3)  # misspelt hyperparameter
    assert "n_feature" in str(err.value)


# ---------------------------------------------------------------------- interrupted cache builds
KILL_DURING_PREPARE = """
import os, signal, sys
import h5py
from eqbench.cli import main

original = h5py.Group.create_dataset
def create_dataset(self, *args, **kwargs):
    if args and args[0] == "forces":  # positions written, properties half done
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)

h5py.Group.create_dataset = create_dataset
sys.exit(main(sys.argv[1:]))
"""


def test_killed_prepare_is_rebuilt_and_never_used(tmp_path, capsys):
    numbers, positions, props = make_molecules([3, 4, 5, 2, 6, 3, 4], seed=9)
    frames = []
    for b, (z, pos) in enumerate(zip(numbers, positions, strict=True)):
        atoms = Atoms(numbers=z, positions=pos)
        atoms.info["energy"] = props["energy"][b]
        atoms.arrays["forces"] = props["forces"][b]
        frames.append(atoms)
    src = tmp_path / "frames.extxyz"
    write(src, frames, format="extxyz")
    out = tmp_path / "cache" / "frames.h5"
    args = ["data", "prepare", str(src), "--out", str(out), "--units", "energy=eV", "forces=eV/Å"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_PREPARE, *args], capture_output=True, text=True,
                          timeout=120, cwd=root)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    partial = list(out.parent.iterdir())
    assert len(partial) == 1 and partial[0].name.startswith("frames.h5.tmp")
    with pytest.raises(DataError):
        read_cache(partial[0])
    # a partial file under the final name (e.g. copied by hand) is never used ...
    partial[0].replace(out)
    with pytest.raises(DataError) as err:
        AtomisticDataModule(str(out)).setup()
    assert_helpful(err.value, out, "delete it and prepare it again")
    assert main(["data", "info", str(out)]) == 2
    assert "eqbench: error:" in capsys.readouterr().err
    # ... and the next run rebuilds it
    assert main(args) == 0
    ds = read_cache(out)
    assert len(ds) == 7 and set(ds.properties) == {"energy", "forces"}
    np.testing.assert_allclose(ds.properties["forces"].values, np.concatenate(props["forces"]), atol=1e-7)
    only(out.parent, "frames.h5")


# ---------------------------------------------------------------------- units
def test_unknown_unit_is_refused_where_units_enter(tmp_path, capsys, cache_file):
    tmp_path = tmp_path / "units"
    tmp_path.mkdir()
    frames = [Atoms("H2", positions=[[0, 0, 0], [0.0, 0, 0.74 + 0.01 * b]], info={"energy": -1.0 - b})
              for b in range(3)]
    src = tmp_path / "frames.extxyz"
    write(src, frames, format="extxyz")
    # --units on the command line: refused before anything is read or written, with the known units listed
    assert prepare(src, tmp_path / "out.h5", "--units", "energy=furlongs") == 2
    error = capsys.readouterr().err
    assert error.startswith("eqbench: error: --units energy: unknown unit 'furlongs'") and error.count("\n") == 1
    assert "kcal/mol" in error and "eV/Å" in error and "Bohr" in error
    only(tmp_path, "frames.extxyz")
    # the Python API (the dataset boundary every reader goes through)
    for bad in ("furlongs", "eV/", "kcal//mol", "(eV", "ev"):
        with pytest.raises(DataError) as err:
            read(src, units={"energy": bad})
        assert_helpful(err.value, src, "'energy'", repr(bad))
    # a cache whose metadata holds an unknown unit (written by something else, or edited)
    with h5py.File(cache_file, "r+") as f:
        name = sorted(f["properties"])[0]
        f["properties"][name].attrs["unit"] = "furlongs"
    with pytest.raises(DataError) as err:
        read_cache(cache_file)
    assert_helpful(err.value, cache_file, repr(name), "'furlongs'")


@pytest.mark.parametrize("unit", ["eV", "meV", "kcal/mol", "kcal/mol/Å", "eV/Å", "eV/Ang", "Hartree/Bohr", "Debye",
                                  "D", "a0^3", "a0 a0 a0", "Bohr^3", "cal/(mol K)", "cal/mol/K", "GHz", "deg",
                                  "e*Å", "fs", ""])
def test_units_eqbench_and_schnetpack_write_are_known(unit):
    from eqbench.units import check_unit

    assert check_unit(unit, "test") == unit


# ---------------------------------------------------------------------- model hyperparameters
BAD_HYPERPARAMETERS = [("cutoff", -1.0), ("cutoff", 0), ("cutoff", float("nan")), ("cutoff", float("inf")),
                       ("cutoff", "abc"), ("n_features", 0), ("n_features", 2.5), ("n_features", True),
                       ("n_interactions", 0), ("n_rbf", -3), ("lmax", -1), ("lmax", 1.5), ("max_z", 0)]


def _model_names():
    from eqbench.models import MODELS

    return sorted(MODELS)


@pytest.mark.parametrize("model", _model_names())
def test_every_model_refuses_hyperparameters_out_of_range(model):
    import inspect

    from eqbench.models import MODELS, create

    accepted = inspect.signature(MODELS[model].__init__).parameters
    tried = 0
    for name, value in BAD_HYPERPARAMETERS:
        if name not in accepted:
            continue
        tried += 1
        with pytest.raises(ModelError) as err:
            create(model, **{name: value})
        assert_helpful(err.value, MODELS[model].__name__, f"{name}={value!r}", "must be")
    assert tried >= 5, f"{model} takes few of the common hyperparameters: {list(accepted)}"


def test_a_new_model_gets_the_checks_without_writing_any():
    from eqbench.models import Representation
    from eqbench.models.base import Range

    class Toy(Representation):
        hyperparameter_ranges = {"n_heads": Range(integer=True, minimum=2)}

        def __init__(self, n_features: int = 4, cutoff: float = 2.0, lmax: int = 1, n_heads: int = 2, **extra):
            super().__init__()
            self.n_features, self.cutoff = n_features, cutoff

    assert Toy(cutoff=3.0, lmax=0).cutoff == 3.0
    for kwargs, named in (({"cutoff": 0.0}, "cutoff=0.0"), ({"lmax": -1}, "lmax=-1"), ({"n_heads": 1}, "n_heads=1"),
                          ({"n_rbf": 0}, "n_rbf=0")):  # n_rbf arrives through **extra and is still checked
        with pytest.raises(ModelError) as err:
            Toy(**kwargs)
        assert_helpful(err.value, "Toy", named)


def _tiny_config(tmp_path, **changes) -> Path:
    import copy

    import yaml

    from tests.sweep_fixtures import TINY_BASE
    from tests.toy_data import toy_cache

    if not (tmp_path / "toy.h5").is_file():
        toy_cache(tmp_path, n_molecules=60)
    config = copy.deepcopy(TINY_BASE)
    config["data"]["path"] = str(tmp_path / "toy.h5")
    config["run"]["dir"] = str(tmp_path / "run")
    config["model"]["representation"]["init_args"].update(changes)
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("cutoff", [-1.0, 0.0, ".nan"])
def test_config_with_an_impossible_cutoff_is_refused_before_training(tmp_path, capsys, cutoff):
    config = _tiny_config(tmp_path, cutoff=cutoff if cutoff != ".nan" else float("nan"))
    assert main(["fit", "--config", str(config)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("eqbench: error: SchNet: cutoff=") and "must be a finite number > 0" in error
    assert not (tmp_path / "run").exists()  # refused at construction, nothing trained


# ---------------------------------------------------------------------- YAML files: file, line and column
@pytest.mark.parametrize("verb", ["fit", "validate", "test", "predict"])
def test_config_that_is_not_yaml_names_file_line_and_column(tmp_path, capsys, verb):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  lr: 0.1\n  targets: [energy\ntrainer: {}\n")
    assert main([verb, "--config", str(path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"eqbench: error: {path}, line 4, column 8: not valid YAML") and "\n" not in error


def test_config_with_a_wrong_type_names_file_line_and_column(tmp_path, capsys):
    config = _tiny_config(tmp_path, cutoff="far")
    assert main(["fit", "--config", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    lines = config.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip().startswith("cutoff:"))
    assert error.startswith(f"eqbench: error: {config}, line {line}, column ") and "\n" not in error
    assert "model.representation.init_args.cutoff" in error and "far" in error
    text = config.read_text().replace("lr: 0.001", "lr: fast").replace("cutoff: far", "cutoff: 3.0")
    config.write_text(text)
    assert main(["test", "--config", str(config)]) == 2
    lr_line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip() == "lr: fast")
    assert f"{config}, line {lr_line}, column 3: model.lr:" in capsys.readouterr().err


def test_sweep_spec_and_report_section_errors_name_file_line_and_column(tmp_path, capsys):
    import yaml

    from eqbench.sweep.compose import load_config
    from tests.sweep_fixtures import write_sweep

    spec = write_sweep(tmp_path, {"model.representation.init_args.n_features": [6]}, seeds=[0])
    body = yaml.safe_load(spec.read_text())
    cases = [("name: x\ngrid: {a: [1, 2}\n", "line 2, column 16: not valid YAML"),
             (yaml.safe_dump({**body, "seeds": "zero"}, sort_keys=False), "'seeds' must be"),
             (yaml.safe_dump({**body, "report": {"tables": [{"name": "t", "rows": "nope"}]}}, sort_keys=False),
              "report.tables[0]")]
    for text, expected in cases:
        spec.write_text(text)
        for verb in (["sweep", "status"], ["sweep", "run"], ["report"]):
            assert main([*verb, str(spec), "--runs-dir", str(tmp_path / "runs")]) == 2
            error = capsys.readouterr().err.strip()
            assert error.startswith(f"eqbench: error: {spec}, line ") and expected in error, error
            assert "\n" not in error
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  lr: 1e-3\n trainer: {}\n")
    with pytest.raises(EqbenchError) as err:
        load_config(base)
    assert str(err.value).startswith(f"{base}, line 3, column 2: not valid YAML")


# ---------------------------------------------------------------------- sweep storage URLs
@pytest.mark.parametrize("url", ["mysql+nope://x", "nonsense", "oracle://u@h/db", "postgresql+pg8000://u:secret@h/db"])
def test_storage_url_that_cannot_be_used_is_one_line_with_the_supported_forms(tmp_path, capsys, url):
    from tests.sweep_fixtures import write_sweep

    spec = write_sweep(tmp_path, {"model.representation.init_args.n_features": [6]}, seeds=[0])
    for verb in (["sweep", "status"], ["sweep", "run"], ["report"]):
        assert main([*verb, str(spec), "--storage", url, "--runs-dir", str(tmp_path / "runs")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("eqbench: error: ") and "\n" not in error and "Traceback" not in error
        assert "secret" not in error  # passwords are never printed
        assert "sqlite:///PATH" in error and "postgresql+psycopg2://" in error, error


# ---------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    config = _tiny_config(tmp)
    assert main(["fit", "--config", str(config)]) == 0
    return tmp, config, tmp / "run"


@pytest.mark.parametrize("verb", ["fit", "validate", "test", "predict"])
def test_a_file_that_is_not_a_checkpoint_is_one_line_for_every_verb(trained, tmp_path, capsys, verb):
    _, config, _ = trained
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    assert main([verb, "--config", str(config), "--ckpt_path", str(text), "--run.dir", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"eqbench: error: {text} is not a readable checkpoint") and "\n" not in error
    assert "RUN/checkpoints/best.ckpt" in error


def test_damaged_missing_and_foreign_checkpoints(trained, tmp_path, capsys):
    import torch

    from eqbench.tracking import load_model

    directory, config, run_dir = trained
    good = (run_dir / "checkpoints" / "best.ckpt").read_bytes()
    truncated, pickled, foreign = tmp_path / "cut.ckpt", tmp_path / "other.ckpt", tmp_path / "foreign.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    torch.save({"weights": torch.zeros(3)}, pickled)
    wide = _tiny_config(directory, n_features=12)
    wide_run = tmp_path / "wide"
    assert main(["fit", "--config", str(wide), "--run.dir", str(wide_run), "--trainer.max_epochs", "1",
                 "--run.test_after_fit", "false"]) == 0
    foreign.write_bytes((wide_run / "checkpoints" / "last.ckpt").read_bytes())
    capsys.readouterr()
    cases = [(truncated, "is not a readable checkpoint"), (pickled, "is not a Lightning checkpoint"),
             (tmp_path / "missing.ckpt", "not found"), (tmp_path, "is not a file"),
             (foreign, "was made for another model")]
    for path, expected in cases:
        assert main(["test", "--config", str(config), "--ckpt_path", str(path), "--run.dir", str(tmp_path / "r")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("eqbench: error: ") and str(path) in error and expected in error, error
        assert "\n" not in error
    # a run directory whose checkpoint was damaged: load_model says so
    copy_dir = tmp_path / "copy"
    shutil.copytree(run_dir, copy_dir)
    (copy_dir / "checkpoints" / "best.ckpt").write_bytes(good[:100])
    with pytest.raises(EqbenchError) as err:
        load_model(copy_dir)
    assert str(copy_dir / "checkpoints" / "best.ckpt") in str(err.value)
    assert load_model(run_dir) is not None
