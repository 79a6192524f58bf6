"""QM7-X (Hoja et al. 2021) from the published files, and So3krates' QM7-X250 protocols.

Raw files (Zenodo record 4288677): ``1000.xz`` … ``8000.xz`` (xz-compressed HDF5; ``1000.hdf5.xz``
and already decompressed ``1000.hdf5`` are accepted too) and ``DupMols.dat``. Each ``.xz`` is
decompressed streaming to a temporary file beside it, read with h5py and deleted.

Layout ``f[idmol][idconf]``, ``idconf = Geom-m<r>-i<s>-c<t>-<u>`` with u = ``opt`` or a displacement
number (``d1``…``d100`` in the files; a bare number is accepted). ``DupMols.dat`` lists equilibrium
conformations (``…-opt``) that duplicate others; each is dropped together with its displacements,
as the authors' ``createDB.py`` does.

Cache properties: ``energy`` (ePBE0+MBD, eV), per-atom ``forces`` (totFOR, eV/Å); optional
``atomization_energy`` (eAT, eV), ``dipole`` (vDIP, e Å, 3-vector), ``polarizability`` (mTPOL, a0^3,
3×3), ``hl_gap`` (HLgap, eV); always the ids ``mol_id`` (r), ``isomer_id`` (s), ``conformer_id`` (t)
and ``step`` (0 for ``opt``, else the displacement number), so that protocols can group.

QM7-X250 (So3krates §4): "250 different molecular structures, each with 80 data points for training,
10 for validation and 11–3748 for testing". A structure is one molecule ``idmol`` with all its
isomers, conformers and displacements: a molecule with a single conformer has 101 points (opt + 100
displacements), i.e. 80 + 10 + 11, the smallest test set the paper quotes; a structure meaning one
conformer would always leave 11. Our copy of the paper lacks the appendix (A.9, A.10) that lists the
molecules, so the 250 (and the 25 unseen molecules of the generalisation test) are drawn by seed.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
from collections.abc import Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from eqbench.data.dataset import AtomisticDataset, Property
from eqbench.data.download import Checksum, RemoteFile, data_root, fetch
from eqbench.data.splits import Size, register_protocol, resolve_sizes
from eqbench.errors import DataError, SplitError

ZENODO = ("https://zenodo.org/records/4288677/files/{}?download=1", "https://zenodo.org/record/4288677/files/{}")
ZENODO_API = "Zenodo md5 and size of the file, as quoted by public QM7-X loaders (schnetpack) and manifests"
SETS = ("1000", "2000", "3000", "4000", "5000", "6000", "7000", "8000")
_SUMS = {
    "1000": [("b50c6a5d0a4493c274368cf22285503e", 715_361_604)],
    "2000": [("4418a813daf5e0d44aa5a26544249ee6", 1_043_743_376)],
    "3000": [("f7b5aac39a745f11436047c12d1eb24e", 2_052_043_036)],
    "4000": [("26819601705ef8c14080fa7fc69decd4", 1_461_283_500)],
    "5000": [("85ac444596b87812aaa9e48d203d0b70", 1_135_294_700)],
    # The public quotes disagree in three digits for this file (schnetpack: …ad854c07, a manifest
    # of the Zenodo API: …adc54c07); one is a transcription error, so either is accepted.
    "6000": [("787fc4a9036af0e67c034a30ad854c07", None), ("787fc4a9036af0e67c034a30adc54c07", 2_016_065_508)],
    "7000": [("5ecce00a188410d06b747cb683d8d347", 1_104_141_872)],
    "8000": [("c893ae88b8f5c32541c3f024fc1daa45", 89_426_884)],
}


def set_file(name: str) -> RemoteFile:
    return RemoteFile((f"{name}.xz", f"{name}.hdf5.xz"), tuple(url.format(f"{name}.xz") for url in ZENODO),
                      tuple(Checksum("md5", md5, ZENODO_API, size) for md5, size in _SUMS[name]),
                      f"QM7-X HDF5 set {name}, xz-compressed, Zenodo 4288677")


DUPLICATES = RemoteFile(("DupMols.dat",), tuple(url.format("DupMols.dat") for url in ZENODO),
                        (Checksum("md5", "5d886ccac38877c8cb26c07704dd1034", "schnetpack's QM7-X loader"),),
                        "QM7-X duplicate molecules, Zenodo 4288677")

CONF_ID = re.compile(r"Geom-m(\d+)-i(\d+)-c(\d+)-(opt|d?\d+)")
# cache name: (HDF5 key, unit, per atom, shape of one value)
KEYS = {
    "energy": ("ePBE0+MBD", "eV", False, ()),
    "forces": ("totFOR", "eV/Å", True, (3,)),
    "atomization_energy": ("eAT", "eV", False, ()),
    "dipole": ("vDIP", "e Å", False, (3,)),
    "polarizability": ("mTPOL", "a0^3", False, (3, 3)),
    "hl_gap": ("HLgap", "eV", False, ()),
}
DEFAULT_PROPERTIES = ("energy", "forces")
IDS = ("mol_id", "isomer_id", "conformer_id", "step")


def parse_duplicates(text: str) -> set[str]:
    """Conformation prefixes ``Geom-m<r>-i<s>-c<t>`` of the molecules listed in ``DupMols.dat``."""
    return {line.strip().rsplit("-", 1)[0] for line in text.splitlines() if line.strip().startswith("Geom-")}


def read_hdf5(path: Path, source: str, duplicates: set[str], properties: Sequence[str]) -> tuple[dict, int]:
    """Arrays of one QM7-X HDF5 file: ``z``, ``pos``, ``n_atoms``, the ids and ``properties``; and how
    many conformations were dropped as duplicates."""
    columns: dict[str, list] = {name: [] for name in ("z", "pos", "n_atoms", *IDS, *properties)}
    dropped = 0
    try:
        with h5py.File(path, "r") as f:
            for mol_key, molecule in f.items():
                for conf_key, conf in molecule.items():
                    match = CONF_ID.fullmatch(conf_key)
                    if match is None:
                        raise DataError(f"{source}: {mol_key}/{conf_key} is not a conformation id "
                                        f"Geom-m<r>-i<s>-c<t>-<u>; is it a QM7-X file?")
                    if conf_key.rsplit("-", 1)[0] in duplicates:
                        dropped += 1
                        continue
                    _append(columns, conf, match, f"{source}:{mol_key}/{conf_key}", properties)
    except OSError as err:
        raise DataError(f"{source} is not a readable HDF5 file ({err}); delete it to download it again") from err
    if not columns["z"]:
        return {}, dropped
    per_atom = {"z", "pos"} | {name for name in properties if KEYS[name][2]}
    arrays = {name: np.concatenate(values) if name in per_atom else np.array(values)
              for name, values in columns.items()}
    return arrays, dropped


def _append(columns: dict, conf, match, where: str, properties: Sequence[str]) -> None:
    try:
        z = np.asarray(conf["atNUM"][()], dtype=np.int64).reshape(-1)
        pos = np.asarray(conf["atXYZ"][()], dtype=np.float64).reshape(len(z), 3)
        values = {}
        for name in properties:
            key, _, per_atom, shape = KEYS[name]
            value = np.asarray(conf[key][()], dtype=np.float64)
            values[name] = value.reshape((len(z), *shape) if per_atom else shape)
    except KeyError as err:
        raise DataError(f"{where}: dataset missing ({err}); the file is damaged or not QM7-X") from err
    except ValueError as err:
        raise DataError(f"{where}: unexpected shape ({err}); the file is damaged or not QM7-X") from err
    columns["z"].append(z)
    columns["pos"].append(pos)
    columns["n_atoms"].append(len(z))
    step = match.group(4)
    ids = (match.group(1), match.group(2), match.group(3), 0 if step == "opt" else step.lstrip("d"))
    for name, value in zip(IDS, ids):
        columns[name].append(int(value))
    for name, value in values.items():
        columns[name].append(value)


@contextmanager
def hdf5_of(path: Path):
    """An HDF5 path for ``path``: an ``.xz`` file is decompressed streaming to a temporary file beside it,
    deleted afterwards (also when reading fails); an ``.hdf5`` file is used as it is."""
    if path.suffix != ".xz":
        yield path
        return
    tmp = path.with_name(f".{path.name}.hdf5.tmp-{os.getpid()}")
    try:
        try:
            with lzma.open(path) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)
        except (lzma.LZMAError, EOFError) as err:
            raise DataError(f"{path} is not a complete xz file ({type(err).__name__}: {err}); delete it to "
                            f"download it again") from err
        yield tmp
    finally:
        if tmp.exists():
            tmp.unlink()


def prepare(directory: str | Path | None = None, out: str | Path | None = None,
            properties: Sequence[str] | None = None, sets: Sequence[str] = SETS, download: bool = True) -> Path:
    """Build the QM7-X cache from the published files in ``directory`` (default ``$EQBENCH_DATA/qm7x``),
    downloading the missing ones; ``sets`` chooses among the eight files. Returns the cache path
    (default ``<directory>/qm7x.h5``)."""
    from eqbench.data.cache import write_cache

    properties = tuple(properties or DEFAULT_PROPERTIES)
    unknown = sorted(set(properties) - set(KEYS))
    if unknown:
        raise DataError(f"QM7-X has no properties {unknown}; choose from {sorted(KEYS)}")
    bad = sorted(set(sets) - set(SETS))
    if bad:
        raise DataError(f"QM7-X has no sets {bad}; choose from {SETS}")
    directory = Path(directory) if directory is not None else data_root() / "qm7x"
    out = Path(out) if out is not None else directory / "qm7x.h5"
    remotes = [DUPLICATES] + [set_file(name) for name in sets if not (directory / f"{name}.hdf5").is_file()]
    sources = fetch(remotes, directory, download=download)
    duplicates = parse_duplicates(sources[DUPLICATES.name].path.read_text(errors="replace"))
    records = {n: s.record() for n, s in sources.items()}
    parts, dropped = [], 0
    for name in sets:
        path = directory / f"{name}.hdf5"
        if path.is_file():  # decompressed by the user: no published checksum to compare with, not hashed
            records[path.name] = {"file": path.name, "verified": None, "origin": "placed by the user, decompressed"}
        else:
            path = sources[f"{name}.xz"].path
        with hdf5_of(path) as hdf5:
            arrays, n_dropped = read_hdf5(hdf5, str(path), duplicates, properties)
        dropped += n_dropped
        if arrays:
            parts.append(arrays)
    if not parts:
        raise DataError(f"no QM7-X conformations found in {directory} (sets {list(sets)})")
    merged = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    offsets = np.concatenate([[0], np.cumsum(merged["n_atoms"])])
    props = {name: Property(merged[name], "", False) for name in IDS}
    props.update({name: Property(merged[name], KEYS[name][1], KEYS[name][2]) for name in properties})
    metadata = {"dataset": "qm7x", "reference": "Hoja et al., Sci. Data 8, 43 (2021); Zenodo 4288677",
                "sets": list(sets), "duplicates_dropped": dropped,
                "keys": {name: KEYS[name][0] for name in properties},
                "sources": records}
    dataset = AtomisticDataset(z=merged["z"], pos=merged["pos"], offsets=offsets, properties=props,
                               metadata=metadata, source=str(directory))
    write_cache(dataset, out)
    return out


# ---------------------------------------------------------------------- QM7-X250 protocols
def _groups(groups: np.ndarray | None, candidates: np.ndarray) -> np.ndarray:
    """Molecule id of every structure of the dataset. Protocols receive only candidate indices, so
    when none are given they are read from the QM7-X cache of ``$EQBENCH_DATA`` (``data.path: qm7x``)."""
    if groups is None:
        path = data_root() / "qm7x" / "qm7x.h5"
        if not path.is_file():
            raise SplitError(f"the QM7-X250 protocols group structures by molecule and read the molecule ids from "
                             f"{path}, which does not exist; use data.path: qm7x (prepared there on first use) "
                             f"or pass groups= to the protocol")
        with h5py.File(path, "r") as f:
            groups = f["properties/mol_id"][()]
    groups = np.asarray(groups)
    if len(candidates) and np.max(candidates) >= len(groups):
        raise SplitError(f"candidate structure {np.max(candidates)} is beyond the {len(groups)} structures whose "
                         f"molecule ids the QM7-X250 protocol has; is the dataset the QM7-X cache?")
    return groups


def qm7x250_molecules(groups: np.ndarray, seed: int, structures: int = 250, min_size: int = 91) -> np.ndarray:
    """The QM7-X250 molecule ids for ``seed``: ``structures`` molecules drawn from those with at least
    ``min_size`` structures (80 + 10 + 1 test point), sorted."""
    mols, counts = np.unique(np.asarray(groups), return_counts=True)
    eligible = mols[counts >= min_size]
    if len(eligible) < structures:
        raise SplitError(f"QM7-X250 needs {structures} molecules with at least {min_size} structures; the dataset "
                         f"has {len(eligible)}; choose fewer structures or smaller train/val sizes")
    return np.sort(np.random.default_rng(seed).choice(eligible, size=structures, replace=False))


def qm7x250_split(candidates: np.ndarray, seed: int, mode: str = "joint", structures: int = 250, train: Size = 80,
                  val: Size = 10, test: Size = None, unseen: int = 25, groups: np.ndarray | None = None,
                  dataset=None):
    """So3krates' QM7-X250. ``train``/``val`` are per structure (molecule); each molecule's structures
    are split by a generator seeded with (seed, molecule id), so a molecule's split is the same in
    every mode.

    mode ``joint``: all 250 molecules, 250 × 80 training points, test = the rest of their structures.
    ``individual``: one molecule, selected with the DataModule's ``subset: {mol_id: [ID]}`` (an id
    from :func:`qm7x250_molecules`). ``unseen``: joint training/validation, test = every structure of
    ``unseen`` molecules outside the 250 (So3krates §4, generalisation). ``test`` (a count) subsamples
    the test set. Molecule ids come from ``groups``, else the ``mol_id`` property of ``dataset`` (the
    DataModule passes it), else the QM7-X cache under ``$EQBENCH_DATA``."""
    if groups is None and dataset is not None and "mol_id" in dataset.properties:
        groups = dataset.properties["mol_id"].values
    groups = _groups(groups, candidates)
    candidates = np.asarray(candidates)
    if not all(isinstance(x, int) and x >= 0 for x in (train, val)):
        raise SplitError(f"QM7-X250 train and val sizes are counts per molecule (80 and 10), got {train!r}, {val!r}")
    n_train, n_val = int(train), int(val)
    chosen = qm7x250_molecules(groups, seed, structures, n_train + n_val + 1)
    cand_groups = groups[candidates]
    if mode == "individual":
        present = np.unique(cand_groups)
        if len(present) != 1:
            raise SplitError(f"qm7x-250 individual mode trains on one molecule; select it with the DataModule's "
                             f"subset: {{mol_id: [ID]}} (the candidates hold {len(present)} molecules)")
        if present[0] not in chosen:
            raise SplitError(f"molecule {present[0]} is not one of the QM7-X250 molecules for seed {seed}; choose "
                             f"from eqbench.data.qm7x.qm7x250_molecules(groups, {seed})")
        selected = present
    elif mode in ("joint", "unseen"):
        selected = chosen
    else:
        raise SplitError(f"unknown QM7-X250 mode {mode!r}; choose joint, individual or unseen")
    order = np.argsort(cand_groups, kind="stable")
    sorted_groups = cand_groups[order]
    parts: tuple[list, list, list] = ([], [], [])
    for mol in selected:
        lo, hi = np.searchsorted(sorted_groups, [mol, mol + 1])
        perm = np.random.default_rng([seed, int(mol)]).permutation(np.sort(candidates[order[lo:hi]]))
        for part, piece in zip(parts, (perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:])):
            part.append(piece)
    tr, va, te = (np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts)
    rng = np.random.default_rng([seed, 1 << 20])
    if mode == "unseen":
        others = np.setdiff1d(np.unique(groups), chosen)
        if len(others) < unseen:
            raise SplitError(f"{unseen} unseen molecules asked for, but only {len(others)} are outside the "
                             f"{structures} QM7-X250 molecules")
        te = candidates[np.isin(cand_groups, rng.choice(others, size=unseen, replace=False))]
    if test is not None:
        te = rng.permutation(te)[:resolve_sizes(len(te), 0, 0, test)[2]]
    return tr, va, te


register_protocol("qm7x-250")(partial(qm7x250_split, mode="joint"))
register_protocol("qm7x-250-individual")(partial(qm7x250_split, mode="individual"))
register_protocol("qm7x-250-unseen")(partial(qm7x250_split, mode="unseen"))
