"""MD17 (Chmiela et al. 2017) and revised MD17 (Christensen & von Lilienfeld 2020) from the published
files, and their split protocols.

- MD17: one sGDML file per molecule, ``md17_<molecule>.npz`` (benzene: ``md17_benzene2017.npz``),
  keys ``E`` (N, 1), ``F``, ``R``, ``z``; metadata keys (``name``, ``theory``, ``md5``, ...) are kept
  in the cache's metadata when present. sGDML publishes no file checksums.
- rMD17: the archive ``rmd17.tar.bz2`` (figshare 12672038) with ``rmd17/npz_data/rmd17_<molecule>.npz``
  (keys ``nuclear_charges``, ``coords``, ``energies`` (N,), ``forces``, ``old_indices``,
  ``old_energies``, ``old_forces``) and the official splits ``rmd17/splits/index_{train,test}_0k.csv``
  (k = 1..5, 1,000 frame indices each, the same for every molecule). The npz files and splits may
  also be placed already extracted (``npz_data/`` and ``splits/`` in the dataset directory).

Each molecule becomes one cache with every frame in file order (so a frame's index in the cache is its
index in the npz and in the split files): ``energy`` (kcal/mol), per-atom ``forces`` (kcal/mol/Å);
rMD17 adds ``md17_index`` (``old_indices``) and optionally ``old_energy``/``old_forces``.
The official splits are extracted to ``<directory>/splits/`` for the ``rmd17-official`` protocols.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from eqbench.data.dataset import AtomisticDataset, Property
from eqbench.data.download import Checksum, RemoteFile, data_root, fetch
from eqbench.data.splits import Size, random_split, register_protocol, resolve_sizes
from eqbench.errors import DataError, SplitError

ENERGY_UNIT, FORCES_UNIT = "kcal/mol", "kcal/mol/Å"
SGDML = ("http://www.quantum-machine.org/gdml/data/npz/", "https://www.quantum-machine.org/gdml/data/npz/")
MD17_FILES = {
    "aspirin": "md17_aspirin.npz", "benzene": "md17_benzene2017.npz", "ethanol": "md17_ethanol.npz",
    "malonaldehyde": "md17_malonaldehyde.npz", "naphthalene": "md17_naphthalene.npz",
    "salicylic": "md17_salicylic.npz", "toluene": "md17_toluene.npz", "uracil": "md17_uracil.npz",
}
RMD17_MOLECULES = ("aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene", "paracetamol",
                   "salicylic", "toluene", "uracil")
ALIASES = {"salicylic-acid": "salicylic", "salicylic_acid": "salicylic"}
SPLIT_INDICES = (1, 2, 3, 4, 5)

RMD17_ARCHIVE = RemoteFile(
    ("rmd17.tar.bz2",),
    ("https://ndownloader.figshare.com/files/23950376", "https://figshare.com/ndownloader/files/23950376",
     "https://ndownloader.figshare.com/files/23950364",
     "https://archive.materialscloud.org/records/pfffs-fff86/files/rmd17.tar.bz2?download=1"),
    (Checksum("md5", "b6bd1c0afbd6912e899d95e8f52999bf",
              "figshare API md5 and size of file 23950364 (article 12672038 v1), as quoted by a public manifest",
              1_063_047_052),
     Checksum("sha256", "cddeea2ec2c4", "load-atoms: leading sha256 digits of figshare file 23950376 (v3)")),
    "revised MD17, figshare article 12672038")
NPZ_MEMBER = re.compile(r"(?:.*/)?npz_data/rmd17_(\w+)\.npz")
SPLIT_MEMBER = re.compile(r"(?:.*/)?splits/index_(train|test)_0([1-5])\.csv")


def molecule_name(molecule: str, revised: bool) -> str:
    name = ALIASES.get(molecule.lower(), molecule.lower())
    known = RMD17_MOLECULES if revised else tuple(MD17_FILES)
    if name not in known:
        raise DataError(f"unknown {'r' if revised else ''}MD17 molecule {molecule!r}; choose one of {list(known)}")
    return name


def md17_remote(molecule: str) -> RemoteFile:
    name = MD17_FILES[molecule_name(molecule, revised=False)]
    return RemoteFile((name,), tuple(base + name for base in SGDML), (), f"MD17 {molecule}, sGDML")


# ---------------------------------------------------------------------- reading the npz files
def load_npz(data: bytes | Path, source: str) -> dict[str, np.ndarray]:
    """All arrays of an npz file; pickled (object) entries are never loaded and are skipped."""
    try:
        with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as f:
            arrays = {}
            for key in f.files:
                try:
                    arrays[key] = f[key]
                except ValueError:  # an object array would need pickle: metadata at most, skip it
                    continue
            return arrays
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{source} is not a readable npz file ({type(err).__name__}: {err}); it is truncated or "
                        f"damaged, delete it to download it again") from err


def _require(arrays: dict, keys: Sequence[str], source: str) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{source}: key(s) {missing} missing (found {sorted(arrays)}); is it the right file?")


def _frames(z, positions, energies, forces, source: str, energy_key: str) -> tuple[np.ndarray, ...]:
    """Shape checks shared by MD17 and rMD17; returns z (n,), R (N, n, 3), E (N,), F (N, n, 3)."""
    z, positions, forces = np.asarray(z), np.asarray(positions, dtype=np.float64), np.asarray(forces)
    if z.ndim != 1 or positions.ndim != 3 or positions.shape[1:] != (len(z), 3):
        raise DataError(f"{source}: positions have shape {positions.shape}, expected (frames, {len(z)}, 3) for "
                        f"{len(z)} atoms")
    n_frames = len(positions)
    if forces.shape != positions.shape:
        raise DataError(f"{source}: forces have shape {forces.shape}, expected {positions.shape}")
    energies = np.asarray(energies, dtype=np.float64)
    if energies.size != n_frames or energies.ndim > 2:
        raise DataError(f"{source}: {energy_key} has shape {energies.shape}, expected one energy per frame "
                        f"({n_frames})")
    return z.astype(np.int64), positions, energies.reshape(n_frames), forces.astype(np.float64)


def _dataset(z, positions, energies, forces, extra: dict[str, Property], metadata: dict,
             source: str) -> AtomisticDataset:
    n_frames, n_atoms = positions.shape[:2]
    props = {"energy": Property(energies, ENERGY_UNIT, False),
             "forces": Property(forces.reshape(-1, 3), FORCES_UNIT, True), **extra}
    return AtomisticDataset(z=np.tile(z, n_frames), pos=positions.reshape(-1, 3),
                            offsets=np.arange(n_frames + 1, dtype=np.int64) * n_atoms, properties=props,
                            metadata=metadata, source=source)


def _text_metadata(arrays: dict, keys: Sequence[str]) -> dict[str, str]:
    return {k: str(arrays[k].item() if arrays[k].ndim == 0 else arrays[k].tolist()) for k in keys if k in arrays}


def md17_dataset(arrays: dict, source: str, molecule: str) -> AtomisticDataset:
    """MD17 arrays (``E`` (N, 1) kcal/mol, ``F`` kcal/mol/Å, ``R`` Å, ``z``) as a dataset."""
    _require(arrays, ("E", "F", "R", "z"), source)
    z, positions, energies, forces = _frames(arrays["z"], arrays["R"], arrays["E"], arrays["F"], source, "E")
    metadata = {"dataset": f"md17-{molecule}", "molecule": molecule,
                "reference": "Chmiela et al., Sci. Adv. 3, e1603015 (2017); sGDML npz",
                "file_metadata": _text_metadata(arrays, ("name", "type", "theory", "md5", "R_unit", "E_unit"))}
    return _dataset(z, positions, energies, forces, {}, metadata, source)


RMD17_OPTIONAL = ("old_energy", "old_forces")


def rmd17_dataset(arrays: dict, source: str, molecule: str, properties: Sequence[str] = ()) -> AtomisticDataset:
    """rMD17 arrays as a dataset; ``properties`` may add ``old_energy`` and ``old_forces`` (MD17's labels)."""
    _require(arrays, ("nuclear_charges", "coords", "energies", "forces", "old_indices"), source)
    unknown = sorted(set(properties) - set(RMD17_OPTIONAL))
    if unknown:
        raise DataError(f"rMD17 has no optional properties {unknown}; choose from {RMD17_OPTIONAL}")
    z, positions, energies, forces = _frames(arrays["nuclear_charges"], arrays["coords"], arrays["energies"],
                                             arrays["forces"], source, "energies")
    old = np.asarray(arrays["old_indices"])
    if old.shape != (len(positions),):
        raise DataError(f"{source}: old_indices has shape {old.shape}, expected ({len(positions)},)")
    extra = {"md17_index": Property(old.astype(np.int64), "", False)}
    if "old_energy" in properties:
        _require(arrays, ("old_energies",), source)
        extra["old_energy"] = Property(np.asarray(arrays["old_energies"], dtype=np.float64).reshape(-1),
                                       ENERGY_UNIT, False)
    if "old_forces" in properties:
        _require(arrays, ("old_forces",), source)
        extra["old_forces"] = Property(np.asarray(arrays["old_forces"], dtype=np.float64).reshape(-1, 3),
                                       FORCES_UNIT, True)
    metadata = {"dataset": f"rmd17-{molecule}", "molecule": molecule,
                "reference": "Christensen & von Lilienfeld, Mach. Learn.: Sci. Technol. 1, 045018 (2020); "
                             "figshare 12672038"}
    return _dataset(z, positions, energies, forces, extra, metadata, source)


def parse_split_csv(text: str, source: str) -> np.ndarray:
    """One frame index per line (blank lines ignored)."""
    values = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                values.append(int(line.strip()))
            except ValueError as err:
                raise DataError(f"{source}, line {number}: {line.strip()!r} is not a frame index") from err
    indices = np.array(values, dtype=np.int64)
    if len(np.unique(indices)) != len(indices) or (indices < 0).any():
        raise DataError(f"{source}: frame indices repeat or are negative; the file is damaged")
    return indices


# ---------------------------------------------------------------------- preparation
def prepare_md17(molecule: str, directory: str | Path | None = None, out: str | Path | None = None,
                 download: bool = True) -> Path:
    """Cache of one MD17 molecule from ``md17_<molecule>.npz`` in ``directory`` (default
    ``$EQBENCH_DATA/md17``), downloaded when absent; returns the cache path."""
    from eqbench.data.cache import write_cache

    molecule = molecule_name(molecule, revised=False)
    directory = Path(directory) if directory is not None else data_root() / "md17"
    out = Path(out) if out is not None else directory / f"md17-{molecule}.h5"
    remote = md17_remote(molecule)
    source = fetch([remote], directory, download=download)[remote.name]
    dataset = md17_dataset(load_npz(source.path, str(source.path)), str(source.path), molecule)
    dataset.metadata["sources"] = {remote.name: source.record()}
    write_cache(dataset, out)
    return out


def _extracted(directory: Path, relative: str) -> Path | None:
    for base in (directory, directory / "rmd17"):
        if (base / relative).is_file():
            return base / relative
    return None


def prepare_rmd17(molecules: Sequence[str] | None = None, directory: str | Path | None = None,
                  out: str | Path | None = None, download: bool = True,
                  properties: Sequence[str] = ()) -> dict[str, Path]:
    """Caches of rMD17 molecules (default: all ten) from ``directory`` (default ``$EQBENCH_DATA/rmd17``):
    extracted ``npz_data/rmd17_<molecule>.npz`` files where present, else one pass over
    ``rmd17.tar.bz2`` (downloaded when absent). ``out`` is the cache file for a single molecule or a
    directory; default ``<directory>/rmd17-<molecule>.h5``. Also extracts the official splits to
    ``<directory>/splits/``."""
    from eqbench.data.cache import write_cache

    names = [molecule_name(m, revised=True) for m in (RMD17_MOLECULES if molecules is None else molecules)]
    directory = Path(directory) if directory is not None else data_root() / "rmd17"
    outs = _outputs(names, directory, out)
    npz = {m: _extracted(directory, f"npz_data/rmd17_{m}.npz") or _extracted(directory, f"rmd17_{m}.npz")
           for m in names}
    splits = {key: _extracted(directory, f"splits/index_{key[0]}_0{key[1]}.csv")
              for key in ((part, k) for part in ("train", "test") for k in SPLIT_INDICES)}
    archive_record = None
    written: dict[str, Path] = {}

    def build(molecule: str, arrays: dict, source: str) -> None:
        dataset = rmd17_dataset(arrays, source, molecule, properties)
        if archive_record is not None:
            dataset.metadata["sources"] = {RMD17_ARCHIVE.name: archive_record}
        write_cache(dataset, outs[molecule])
        written[molecule] = outs[molecule]

    for molecule, path in npz.items():
        if path is not None:
            build(molecule, load_npz(path, str(path)), str(path))
    wanted_npz = {m for m, p in npz.items() if p is None}
    # The splits come from the archive when it is read anyway or already here; extracted npz files
    # alone make valid caches (only the rmd17-official protocols need the splits).
    wanted_splits = {key for key, p in splits.items() if p is None}
    if not wanted_npz and RMD17_ARCHIVE.local(directory) is None:
        wanted_splits = set()
    if wanted_npz or wanted_splits:
        source = fetch([RMD17_ARCHIVE], directory, download=download)[RMD17_ARCHIVE.name]
        archive_record = source.record()
        texts = _read_archive(source.path, wanted_npz, wanted_splits, build)
        missing = sorted(wanted_npz - set(written)) + sorted(f"splits/index_{p}_0{k}.csv"
                                                             for p, k in wanted_splits - set(texts))
        if missing:
            raise DataError(f"{source.path} lacks {missing}; is it the rMD17 archive? Delete it to download it again")
        (directory / "splits").mkdir(parents=True, exist_ok=True)
        for (part, k), text in texts.items():
            _write_text(directory / "splits" / f"index_{part}_0{k}.csv", text)
    return written


def _outputs(names: list[str], directory: Path, out: str | Path | None) -> dict[str, Path]:
    if out is None:
        return {m: directory / f"rmd17-{m}.h5" for m in names}
    out = Path(out)
    if out.suffix in (".h5", ".hdf5"):
        if len(names) != 1:
            raise DataError(f"--out {out} is one file but {len(names)} molecules were asked for; give a directory")
        return {names[0]: out}
    return {m: out / f"rmd17-{m}.h5" for m in names}


def _read_archive(path: Path, wanted_npz: set[str], wanted_splits: set[tuple[str, int]], build) -> dict:
    """One streaming pass over the archive: builds each wanted molecule as its npz member arrives (one
    molecule's arrays in memory at a time) and returns the wanted split files' text."""
    texts: dict[tuple[str, int], str] = {}
    pending = set(wanted_npz)
    try:
        with tarfile.open(path, mode="r:bz2") as tar:
            for member in tar:
                name = PurePosixPath(member.name).as_posix()
                if (match := NPZ_MEMBER.fullmatch(name)) and match.group(1) in pending:
                    source = f"{path}:{member.name}"
                    build(match.group(1), load_npz(tar.extractfile(member).read(), source), source)
                    pending.discard(match.group(1))
                elif (match := SPLIT_MEMBER.fullmatch(name)) and (key := (match.group(1), int(match.group(2)))) \
                        in wanted_splits:
                    text = tar.extractfile(member).read().decode("ascii")
                    parse_split_csv(text, f"{path}:{member.name}")
                    texts[key] = text
                if not pending and len(texts) == len(wanted_splits):
                    break  # the rest of the archive is not needed
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not a complete bz2 tarball ({type(err).__name__}: {err}); delete it to download "
                        f"it again") from err
    return texts


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def official_split(split_index: int, directory: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Training and test frame indices of official rMD17 split ``split_index`` (1..5), read from
    ``<directory>/splits/`` (default ``$EQBENCH_DATA/rmd17``), extracting them from the archive there
    when needed."""
    if split_index not in SPLIT_INDICES:
        raise SplitError(f"rMD17 official split index must be one of {SPLIT_INDICES}, got {split_index!r}")
    directory = Path(directory) if directory is not None else data_root() / "rmd17"
    paths = [_extracted(directory, f"splits/index_{part}_0{split_index}.csv") for part in ("train", "test")]
    if None in paths:
        if RMD17_ARCHIVE.local(directory) is not None:
            prepare_rmd17([], directory, download=False)  # extracts the splits only
            paths = [_extracted(directory, f"splits/index_{part}_0{split_index}.csv") for part in ("train", "test")]
        else:
            raise SplitError(f"the official rMD17 splits are not in {directory}/splits/; run `eqbench data prepare "
                             f"rmd17` (or place the archive's splits/ directory there; $EQBENCH_DATA sets the root)")
    train, test = (parse_split_csv(p.read_text(), str(p)) for p in paths)
    return train, test


# ---------------------------------------------------------------------- split protocols
@register_protocol("md17-1k")
def md17_1k(candidates: np.ndarray, seed: int, train: Size = 950, val: Size = 50, test: Size = None):
    """1,000 known structures drawn at random, 950 for training and 50 for validation; the rest test
    (PaiNN §5.2, DimeNet, So3krates on MD17; also a random protocol for rMD17)."""
    return random_split(candidates, seed, train, val, test)


def rmd17_official(candidates: np.ndarray, seed: int, split_index: int = 1, train: Size = 950, val: Size = 50,
                   test: Size = None, indices: tuple[np.ndarray, np.ndarray] | None = None,
                   directory: str | Path | None = None, dataset=None):
    """Official rMD17 split ``split_index``: its 1,000 training frames divided 950/50 by ``seed``, its
    1,000 test frames as the test set (``test`` a count: a random subset of them). ``indices``
    (train, test) replaces the published files, e.g. in tests. The files are looked up in ``directory``,
    else beside the dataset's cache (``splits/`` next to ``rmd17-<molecule>.h5``), else under
    ``$EQBENCH_DATA/rmd17``."""
    if directory is None and dataset is not None and (Path(dataset.source).parent / "splits").is_dir():
        directory = Path(dataset.source).parent
    official_train, official_test = indices if indices is not None else official_split(split_index, directory)
    official_train, official_test = np.asarray(official_train), np.asarray(official_test)
    if np.intersect1d(official_train, official_test).size:
        raise SplitError(f"official rMD17 split {split_index}: training and test frames overlap; the split files "
                         f"are damaged")
    pool = official_train[np.isin(official_train, candidates)]
    tests = official_test[np.isin(official_test, candidates)]
    n_train, n_val, _ = resolve_sizes(len(pool), train, val, 0)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(pool)
    if test is not None:
        n_test = resolve_sizes(len(tests), 0, 0, test)[2]
        tests = rng.permutation(tests)[:n_test]
    return perm[:n_train], perm[n_train:n_train + n_val], tests


register_protocol("rmd17-official")(rmd17_official)
for _k in SPLIT_INDICES:
    register_protocol(f"rmd17-official-{_k}")(partial(rmd17_official, split_index=_k))
