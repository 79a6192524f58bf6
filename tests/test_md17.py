"""MD17 and revised MD17 from the published files: the real samples of ../shared/data, an rMD17
archive built like the published one, the official split files, and the protocols. Expected
values are typed in from the files, with their units."""

from __future__ import annotations

import io
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from eqbench.data import make_split, read, read_cache
from eqbench.data.download import OfflineError, UnverifiedDownloadWarning
from eqbench.data.md17 import md17_1k, prepare_md17, prepare_rmd17, rmd17_official
from eqbench.errors import DataError, SplitError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MD17_SAMPLE = SHARED / "md17" / "md17_ethanol_sample200.npz"
RMD17_SAMPLE = SHARED / "rmd17" / "rmd17_ethanol_sample200.npz"
needs_shared = pytest.mark.skipif(not (MD17_SAMPLE.is_file() and RMD17_SAMPLE.is_file()),
                                  reason=f"real MD17/rMD17 samples not found under {SHARED} (the shared data "
                                         f"directory beside the repository)")
ETHANOL_Z = [6, 6, 8, 1, 1, 1, 1, 1, 1]
# The archives here are built by the tests, so they differ from the published checksum (and say so).
pytestmark = pytest.mark.filterwarnings("ignore::eqbench.data.download.SourceChecksumWarning")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("tests never use the network")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def placed(tmp_path: Path, sample: Path, name: str) -> Path:
    directory = tmp_path / name.split("_")[0]
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample, directory / name)
    return directory


# ---------------------------------------------------------------------- the real samples
@needs_shared
def test_md17_sample_shapes_and_units(tmp_path):
    with np.load(MD17_SAMPLE) as f:
        assert f["E"].shape == (200, 1) and f["F"].shape == f["R"].shape == (200, 9, 3)  # the file's layout
    out = prepare_md17("ethanol", placed(tmp_path, MD17_SAMPLE, "md17_ethanol.npz"), download=False)
    assert out.name == "md17-ethanol.h5"
    ds = read_cache(out, validate=True)
    assert len(ds) == 200 and ds.n_atoms.tolist() == [9] * 200 and ds.z[:9].tolist() == ETHANOL_Z
    assert ds.units == {"energy": "kcal/mol", "forces": "kcal/mol/Å"}
    energy, forces = ds.properties["energy"], ds.properties["forces"]
    assert energy.values.shape == (200,) and not energy.per_atom  # E (N, 1) → one energy per frame
    assert forces.values.shape == (1800, 3) and forces.per_atom
    assert energy.values[0] == -97208.40600498248 and energy.values[199] == -97203.86842037419  # kcal/mol
    assert ds.pos[2].tolist() == [1.1304, 0.3147, 0.0]  # Å, frame 0 atom 2
    assert forces.values[2].tolist() == [-4.0883694515, 22.5901955842, 3.30876819905e-06]  # kcal/mol/Å
    assert ds.pos[199 * 9 + 8].tolist() == [1.69235567, 0.21970672, -0.69682868]
    assert forces.values[199 * 9 + 8].tolist() == [13.8667880241, 5.15092119845, -9.3581206335]
    assert ds.metadata["sources"]["md17_ethanol.npz"]["origin"] == "placed by the user"


@needs_shared
def test_rmd17_sample_shapes_and_units(tmp_path):
    with np.load(RMD17_SAMPLE) as f:
        assert f["energies"].shape == (200,) and f["coords"].shape == (200, 9, 3)
    outs = prepare_rmd17(["ethanol"], placed(tmp_path, RMD17_SAMPLE, "rmd17_ethanol.npz"), download=False,
                         properties=["old_energy"])
    ds = read_cache(outs["ethanol"], validate=True)
    assert len(ds) == 200 and ds.z[:9].tolist() == ETHANOL_Z
    assert ds.units == {"energy": "kcal/mol", "forces": "kcal/mol/Å", "md17_index": "", "old_energy": "kcal/mol"}
    energy = ds.properties["energy"].values
    assert energy.shape == (200,)
    assert energy[[0, 7, 42]].tolist() == [-97082.38717602966, -97070.63628081979, -97075.31183127928]
    assert ds.pos[2].tolist() == [1.08731193, -0.46663204, 0.14131699]
    assert ds.properties["forces"].values[2].tolist() == [19.937083558599458, -26.56135740674775,
                                                          0.21825985018573832]
    assert ds.properties["md17_index"].values[[0, 7, 42, 199]].tolist() == [26369, 269044, 34518, 445985]
    assert ds.properties["old_energy"].values[0] == -97202.62327677594


# ---------------------------------------------------------------------- the archive and the official splits
SPLIT_TRAIN = {k: np.random.default_rng(k).choice(np.setdiff1d(np.arange(200), [7, 42]), 40, replace=False)
               for k in range(1, 6)}
SPLIT_TEST = {k: np.concatenate([[7, 42], np.setdiff1d(np.arange(100, 200), SPLIT_TRAIN[k])[:28]])
              for k in range(1, 6)}


def write_archive(path: Path, npz: bytes, splits: bool = True) -> None:
    """rmd17.tar.bz2 laid out as published: rmd17/npz_data/, rmd17/splits/, a readme."""
    members = {"rmd17/readme.txt": b"revised MD17\n", "rmd17/npz_data/rmd17_ethanol.npz": npz}
    if splits:
        for k in range(1, 6):
            members[f"rmd17/splits/index_train_0{k}.csv"] = "".join(f"{i}\n" for i in SPLIT_TRAIN[k]).encode()
            members[f"rmd17/splits/index_test_0{k}.csv"] = "".join(f"{i}\n" for i in SPLIT_TEST[k]).encode()
    with tarfile.open(path, mode="w:bz2") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def rmd17_dir(tmp_path) -> Path:
    directory = tmp_path / "rmd17"
    directory.mkdir()
    write_archive(directory / "rmd17.tar.bz2", RMD17_SAMPLE.read_bytes())
    return directory


@needs_shared
def test_rmd17_archive_fixture_and_official_split_select_the_right_frames(rmd17_dir, monkeypatch):
    outs = prepare_rmd17(["ethanol"], rmd17_dir, download=False)
    ds = read_cache(outs["ethanol"])
    assert len(ds) == 200 and ds.metadata["sources"]["rmd17.tar.bz2"]["origin"] == "placed by the user"
    assert sorted(p.name for p in (rmd17_dir / "splits").iterdir()) == sorted(
        f"index_{part}_0{k}.csv" for part in ("train", "test") for k in range(1, 6))
    assert not (rmd17_dir / "npz_data").exists()  # nothing else extracted
    monkeypatch.setenv("EQBENCH_DATA", str(rmd17_dir.parent))
    split = make_split(np.arange(len(ds)), "rmd17-official-1", 0, None, None, train=38, val=2)
    assert split.sizes() == (38, 2, 30)
    assert sorted(np.concatenate([split.train, split.val]).tolist()) == sorted(SPLIT_TRAIN[1].tolist())
    assert split.test.tolist() == SPLIT_TEST[1].tolist()
    energy = ds.properties["energy"].values
    assert energy[split.test[:2]].tolist() == [-97070.63628081979, -97075.31183127928]  # frames 7 and 42, kcal/mol
    other = make_split(np.arange(len(ds)), "rmd17-official-3", 0, None, None, train=38, val=2)
    assert sorted(np.concatenate([other.train, other.val]).tolist()) == sorted(SPLIT_TRAIN[3].tolist())
    reseeded = make_split(np.arange(len(ds)), "rmd17-official-1", 1, None, None, train=38, val=2)
    assert set(reseeded.val) != set(split.val) and set(reseeded.train) | set(reseeded.val) == set(SPLIT_TRAIN[1])


@needs_shared
def test_named_rmd17_in_the_datamodule(rmd17_dir, monkeypatch):
    from eqbench.data.datamodule import AtomisticDataModule

    monkeypatch.setenv("EQBENCH_DATA", str(rmd17_dir.parent))
    dm = AtomisticDataModule("rmd17-ethanol", split="rmd17-official-2", train_size=36, val_size=4, batch_size=8)
    dm.setup("fit")
    assert dm.split.sizes() == (36, 4, 30) and dm.units["energy"] == "kcal/mol"
    assert set(dm.split.test.tolist()) == set(SPLIT_TEST[2].tolist())
    batch = next(iter(dm.test_dataloader()))
    assert batch.targets["forces"].shape == (8 * 9, 3)


@needs_shared
def test_splits_are_read_from_an_archive_whose_npz_was_extracted(tmp_path):
    directory = placed(tmp_path, RMD17_SAMPLE, "rmd17_ethanol.npz")
    prepare_rmd17(["ethanol"], directory, download=False)
    assert not (directory / "splits").exists()  # no archive: the cache is made, the splits stay missing
    with pytest.raises(SplitError, match="eqbench data prepare rmd17"):
        rmd17_official(np.arange(200), 0, directory=directory)
    write_archive(directory / "rmd17.tar.bz2", b"", splits=True)
    train, val, test = rmd17_official(np.arange(200), 0, split_index=4, train=30, val=10, directory=directory)
    assert set(train) | set(val) == set(SPLIT_TRAIN[4]) and test.tolist() == SPLIT_TEST[4].tolist()


# ---------------------------------------------------------------------- protocols at real size
def test_md17_1k_at_real_size():
    candidates = np.arange(211_762)  # aspirin frames
    train, val, test = md17_1k(candidates, seed=0)
    assert (len(train), len(val), len(test)) == (950, 50, 210_762)
    union = np.concatenate([train, val, test])
    assert len(np.unique(union)) == len(candidates)
    again = md17_1k(candidates, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(md17_1k(candidates, seed=1)[0], train)
    assert [len(p) for p in md17_1k(np.arange(300), seed=0, train=95, val=5)] == [95, 5, 200]


def test_rmd17_official_at_real_size():
    rng = np.random.default_rng(0)
    frames = rng.permutation(100_000)
    official = (frames[:1000], frames[1000:2000])
    train, val, test = rmd17_official(np.arange(100_000), 5, indices=official)
    assert (len(train), len(val), len(test)) == (950, 50, 1000)
    assert set(train) | set(val) == set(official[0]) and not set(train) & set(val)
    assert test.tolist() == official[1].tolist()
    again = rmd17_official(np.arange(100_000), 5, indices=official)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(rmd17_official(np.arange(100_000), 6, indices=official)[1], val)
    with pytest.raises(SplitError, match="overlap"):
        rmd17_official(np.arange(100_000), 0, indices=(frames[:1000], frames[500:1500]))
    with pytest.raises(SplitError, match="one of"):
        rmd17_official(np.arange(100_000), 0, split_index=6)


# ---------------------------------------------------------------------- damaged, missing and unknown
@needs_shared
def test_missing_key_is_named(tmp_path):
    directory = tmp_path / "md17"
    directory.mkdir()
    with np.load(MD17_SAMPLE) as f:
        np.savez(directory / "md17_ethanol.npz", E=f["E"], R=f["R"], z=f["z"])
    with pytest.raises(DataError, match=r"md17_ethanol.npz: key\(s\) \['F'\] missing"):
        prepare_md17("ethanol", directory, download=False)
    assert not list(directory.glob("*.h5"))


@needs_shared
def test_wrong_energy_shape_is_named(tmp_path):
    directory = tmp_path / "md17"
    directory.mkdir()
    with np.load(MD17_SAMPLE) as f:
        np.savez(directory / "md17_ethanol.npz", E=f["E"][:150], F=f["F"], R=f["R"], z=f["z"])
    with pytest.raises(DataError, match=r"E has shape \(150, 1\).*200"):
        prepare_md17("ethanol", directory, download=False)


@needs_shared
def test_truncated_files_are_errors_naming_them(tmp_path):
    directory = placed(tmp_path, MD17_SAMPLE, "md17_ethanol.npz")
    data = (directory / "md17_ethanol.npz").read_bytes()
    (directory / "md17_ethanol.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="md17_ethanol.npz is not a readable npz file.*truncated"):
        prepare_md17("ethanol", directory, download=False)
    assert not list(directory.glob("*.h5"))
    archive_dir = tmp_path / "rmd17"
    archive_dir.mkdir()
    write_archive(archive_dir / "rmd17.tar.bz2", RMD17_SAMPLE.read_bytes())
    data = (archive_dir / "rmd17.tar.bz2").read_bytes()
    (archive_dir / "rmd17.tar.bz2").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="rmd17.tar.bz2 is not a complete bz2 tarball"):
        prepare_rmd17(["ethanol"], archive_dir, download=False)
    assert not list(archive_dir.glob("*.h5"))


def test_missing_files_offline_say_what_to_place_where(tmp_path):
    with pytest.raises(OfflineError) as err:
        prepare_md17("aspirin", tmp_path / "md17")
    message = str(err.value)
    assert "md17_aspirin.npz" in message and str(tmp_path / "md17") in message
    assert "http://www.quantum-machine.org/gdml/data/npz/md17_aspirin.npz" in message
    assert "no published checksum" in message
    with pytest.raises(OfflineError, match=r"rmd17.tar.bz2.*1,063,047,052 bytes"):
        prepare_rmd17(["toluene"], tmp_path / "rmd17")
    assert not (tmp_path / "md17").exists() or not list((tmp_path / "md17").iterdir())


def test_unknown_molecules(tmp_path, monkeypatch):
    monkeypatch.setenv("EQBENCH_DATA", str(tmp_path))
    with pytest.raises(DataError, match="unknown MD17 molecule 'paracetamol'.*aspirin"):
        read("md17-paracetamol")  # only in rMD17
    with pytest.raises(DataError, match="unknown rMD17 molecule 'water'"):
        read("rmd17-water")


@needs_shared
def test_md17_download_without_published_checksum_warns(tmp_path, monkeypatch):
    sample = MD17_SAMPLE.read_bytes()

    def urlopen(request, timeout=None):
        assert request.full_url == "http://www.quantum-machine.org/gdml/data/npz/md17_ethanol.npz"
        response = io.BytesIO(sample)
        response.headers = {"Content-Type": "application/octet-stream"}
        return response

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setenv("EQBENCH_DATA", str(tmp_path))
    with pytest.warns(UnverifiedDownloadWarning, match="md17_ethanol.npz"):
        ds = read("md17-ethanol")
    assert len(ds) == 200
    record = ds.metadata["sources"]["md17_ethanol.npz"]
    assert record["verified"] is None and record["origin"].startswith("http://www.quantum-machine.org")
    assert (tmp_path / "md17" / "md17_ethanol.npz").read_bytes() == sample


@needs_shared
def test_cli_prepares_by_name_from_a_root(tmp_path, capsys):
    from eqbench.cli import main

    directory = placed(tmp_path, MD17_SAMPLE, "md17_ethanol.npz")
    out = tmp_path / "caches"
    assert main(["data", "prepare", "md17", "--molecule", "ethanol", "--root", str(directory), "--out", str(out),
                 "--no-download"]) == 0
    assert f"wrote {out / 'md17-ethanol.h5'}: 200 molecules" in capsys.readouterr().out
    assert read_cache(out / "md17-ethanol.h5").properties["energy"].values[0] == -97208.40600498248
    assert main(["data", "prepare", "md17", "--molecule", "aspirin", "--root", str(directory), "--no-download"]) == 2
    error = capsys.readouterr().err
    assert "md17_aspirin.npz" in error and str(directory) in error
    assert main(["data", "prepare", str(directory / "md17_ethanol.npz"), "--root", str(directory)]) == 2
    assert "--root apply to published datasets" in capsys.readouterr().err


@needs_shared
def test_official_split_is_taken_from_beside_the_dataset_not_the_data_root(rmd17_dir, monkeypatch, tmp_path):
    from eqbench.data.datamodule import AtomisticDataModule

    outs = prepare_rmd17(["ethanol"], rmd17_dir, download=False)
    monkeypatch.setenv("EQBENCH_DATA", str(tmp_path / "elsewhere"))  # holds no rMD17 splits at all
    dm = AtomisticDataModule(str(outs["ethanol"]), split="rmd17-official-2", train_size=38, val_size=2,
                             split_dir=str(tmp_path / "splits"))
    dm.setup("fit")
    assert sorted(np.concatenate([dm.split.train, dm.split.val]).tolist()) == sorted(SPLIT_TRAIN[2].tolist())
    assert dm.split.test.tolist() == SPLIT_TEST[2].tolist()


# ---------------------------------------------------------------------- a file written here (no ../shared)
def test_md17_style_npz_written_here_converts_to_the_cache(tmp_path):
    """An npz in the sGDML MD17 layout (E (N, 1) kcal/mol, F (N, n, 3) kcal/mol/Å, R (N, n, 3) Å, z (n,),
    text metadata), two frames of ethanol with values typed in here: the conversion runs on a fresh
    clone without the shared samples."""
    z = np.array(ETHANOL_Z)
    frame = np.array([[-0.52, -0.13, 0.02], [0.99, 0.01, -0.05], [1.51, 1.23, 0.11], [-0.82, -1.18, 0.08],
                      [-0.93, 0.29, 0.94], [-0.95, 0.37, -0.83], [1.31, -0.42, -0.99], [1.35, -0.58, 0.78],
                      [2.47, 1.17, 0.05]])
    positions = np.stack([frame, frame + 0.01 * np.arange(27).reshape(9, 3)])
    forces = np.stack([np.full((9, 3), 1.5), -np.arange(27.0).reshape(9, 3)])
    directory = tmp_path / "md17"
    directory.mkdir()
    np.savez(directory / "md17_ethanol.npz", E=np.array([[-97208.5], [-97203.25]]), F=forces, R=positions, z=z,
             name=np.array("ethanol"), type=np.array("d"), theory=np.array("PBE+vdW-TS"))
    ds = read_cache(prepare_md17("ethanol", directory, download=False), validate=True)
    assert len(ds) == 2 and ds.n_atoms.tolist() == [9, 9] and ds.z.tolist() == ETHANOL_Z * 2
    assert ds.units == {"energy": "kcal/mol", "forces": "kcal/mol/Å"}
    assert ds.properties["energy"].values.tolist() == [-97208.5, -97203.25]  # E (N, 1) → one per frame
    assert ds.properties["forces"].per_atom and ds.properties["forces"].values.shape == (18, 3)
    assert ds.properties["forces"].values[9 + 4].tolist() == [-12.0, -13.0, -14.0]  # frame 1, atom 4
    assert ds.pos[9 + 8].tolist() == pytest.approx([2.47 + 0.24, 1.17 + 0.25, 0.05 + 0.26])
    assert ds.metadata["file_metadata"]["theory"] == "PBE+vdW-TS"
