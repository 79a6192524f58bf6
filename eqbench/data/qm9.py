"""QM9 (Ramakrishnan et al. 2014) from the published files, and the papers' split protocols.

Raw files (figshare collection 978904), looked for in the dataset directory and downloaded when
absent: ``dsgdb9nsd.xyz.tar.bz2`` (133,885 xyz files, read streaming from the tarball, never
extracted), ``atomref.txt`` and ``uncharacterized.txt``.

Properties of the cache (per molecule):

=========  ============  ==============================================================
mu         D             dipole moment, native unit
alpha      a0^3          isotropic polarizability, native unit
homo       meV           HOMO energy
lumo       meV           LUMO energy
gap        meV           the file's gap column, LUMO − HOMO as published (each column is rounded
                         to 1e-4 Hartree, so it can differ from lumo − homo by 1e-4 Hartree)
r2         a0^2          electronic spatial extent ⟨R²⟩, native unit
zpve       meV           zero-point vibrational energy
U0 U H G   meV           **atomization** energies: total − Σ atomref.txt reference of each atom
Cv         cal/(mol K)   heat capacity, native unit; its atom references are in the cache's ``atomrefs``
index      (none)        the molecule's number in the archive (``dsgdb9nsd_NNNNNN.xyz``)
=========  ============  ==============================================================

Optional: ``A``, ``B``, ``C`` (rotational constants, GHz) and per-atom ``mulliken_charges`` (e).
Energies are converted Hartree → meV once, with ``ase.units.Hartree``.

Standardisation: U0, U, H and G are stored with the atom references already subtracted, so the
cache holds no ``atomrefs`` for them (the task would otherwise subtract them twice); the task
standardises the atomization energy per atom. The references themselves (Hartree, as in
``atomref.txt``) are kept in the metadata. Cv keeps its native value and its references
(2.981 cal/(mol K) per atom) go into ``atomrefs["Cv"]``, which the task subtracts for a summed head.
"""

from __future__ import annotations

import re
import tarfile
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from eqbench.data.dataset import MAX_Z, AtomisticDataset, Property
from eqbench.data.download import Checksum, RemoteFile, data_root, fetch
from eqbench.data.splits import Size, random_split, register_protocol
from eqbench.errors import DataError

FIGSHARE = ("https://ndownloader.figshare.com/files/", "https://springernature.figshare.com/ndownloader/files/",
            "https://figshare.com/ndownloader/files/")
FIGSHARE_API = "figshare API computed_md5 and size of the file (as quoted by several public QM9 loaders)"

TARBALL = RemoteFile(
    ("dsgdb9nsd.xyz.tar.bz2",),
    tuple(base + "3195389" for base in FIGSHARE)
    + ("https://paddle-org.bj.bcebos.com/paddlematerials/datasets/qm9/dsgdb9nsd.xyz.tar.bz2",),
    (Checksum("md5", "ad1ebd51ee7f5b3a6e32e974e5d54012", FIGSHARE_API, 86_144_227),),
    "QM9 xyz files, figshare file 3195389")
ATOMREF = RemoteFile(
    ("atomref.txt",), tuple(base + "3195395" for base in FIGSHARE),
    (Checksum("md5", "2d30b2df8329d8fd805c0a4d158a0a0f", FIGSHARE_API, 964),),
    "QM9 atom references, figshare file 3195395")
UNCHARACTERIZED = RemoteFile(
    ("uncharacterized.txt",), tuple(base + "3195404" for base in FIGSHARE),
    (Checksum("md5", "a361887bacb427b8a0ce7903d92a53b4", FIGSHARE_API, 486_752),),
    "QM9 list of uncharacterized molecules, figshare file 3195404")

N_PUBLISHED = 133_885
N_UNCHARACTERIZED = 3_054
ELEMENTS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
MEMBER = re.compile(r"dsgdb9nsd_(\d{6})\.xyz")
# Line 2 after "gdb <index>": A, B, C, mu, alpha, homo, lumo, gap, r2, zpve, U0, U, H, G, Cv.
COLUMNS = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
ATOMREF_COLUMNS = ("zpve", "U0", "U", "H", "G", "Cv")
ATOMIZATION = ("U0", "U", "H", "G")
UNITS = {"A": "GHz", "B": "GHz", "C": "GHz", "mu": "D", "alpha": "a0^3", "homo": "meV", "lumo": "meV",
         "gap": "meV", "r2": "a0^2", "zpve": "meV", "U0": "meV", "U": "meV", "H": "meV", "G": "meV",
         "Cv": "cal/(mol K)", "index": "", "mulliken_charges": "e"}
DEFAULT_PROPERTIES = ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv", "index")
OPTIONAL_PROPERTIES = ("A", "B", "C", "mulliken_charges")


def hartree_to_mev() -> float:
    from ase import units

    return units.Hartree * 1000.0


# ---------------------------------------------------------------------- parsing the published text files
def parse_atomref(text: str, source: str) -> dict[str, np.ndarray]:
    """Per-element references of ``atomref.txt`` as arrays indexed by Z (Hartree; Cv in cal/(mol K)).

    Rows are found by their element symbol, so header and footer lines of any length are skipped."""
    rows: dict[str, list[float]] = {}
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) == len(ATOMREF_COLUMNS) + 1 and tokens[0] in ELEMENTS:
            try:
                rows[tokens[0]] = [float(v) for v in tokens[1:]]
            except ValueError as err:
                raise DataError(f"{source}: bad number in the row of {tokens[0]} ({err}); the file is damaged, "
                                f"delete it to download it again") from err
    missing = [e for e in ELEMENTS if e not in rows]
    if missing:
        raise DataError(f"{source}: no atom reference row for {missing}; expected one row per element H, C, N, O, F "
                        f"with {len(ATOMREF_COLUMNS)} values; delete the file to download it again")
    refs = {name: np.zeros(MAX_Z + 1) for name in ATOMREF_COLUMNS}
    for symbol, values in rows.items():
        for name, value in zip(ATOMREF_COLUMNS, values):
            refs[name][ELEMENTS[symbol]] = value
    return refs


def parse_uncharacterized(text: str) -> np.ndarray:
    """Indices listed in ``uncharacterized.txt``: the first token of every line that is an integer
    (header and footer lengths differ between copies)."""
    indices = [int(tokens[0]) for tokens in (line.split() for line in text.splitlines())
               if tokens and tokens[0].isdigit()]
    return np.array(sorted(set(indices)), dtype=np.int64)


def _doubles() -> array:
    return array("d")


@dataclass
class ParsedMolecules:
    """Molecules in the order they were read; ``values`` has the 15 columns of line 2. Numbers are
    kept in typed arrays (8 bytes each, not a Python float object each: QM9 has 7 million)."""

    index: list[int] = field(default_factory=list)
    n_atoms: list[int] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    coordinates: array = field(default_factory=_doubles)  # x, y, z of every atom, flat
    charges: array = field(default_factory=_doubles)
    values: array = field(default_factory=_doubles)  # 15 per molecule, flat


def parse_xyz(text: str, source: str, into: ParsedMolecules) -> None:
    """Append one QM9 xyz file to ``into``. Numbers may use Mathematica exponents (``1.2*^-6``); the
    number of frequencies is never checked (some files hold twice 3n−6)."""
    lines = text.replace("*^", "e").split("\n")
    try:
        n = int(lines[0])
        head = lines[1].split()
        if len(head) != 2 + len(COLUMNS) or head[0] != "gdb":
            raise ValueError(f"line 2 has {len(head)} fields, expected 'gdb', the index and {len(COLUMNS)} values")
        values = [float(v) for v in head[2:]]
        atoms = [line.split() for line in lines[2:2 + n]]
        if len(lines) < n + 5 or not lines[n + 4].startswith("InChI="):
            raise ValueError(f"expected {n} atom lines, frequencies, SMILES and InChI; the file ends early")
        symbols = [a[0] for a in atoms]
        coordinates = [float(v) for a in atoms for v in a[1:4]]
        charges = [float(a[4]) for a in atoms]
        index = int(head[1])
    except (ValueError, IndexError) as err:
        raise DataError(f"{source}: not a QM9 xyz file ({err}); the file is damaged, delete it to download it "
                        f"again") from err
    if len(coordinates) != 3 * n:
        raise DataError(f"{source}: an atom line has fewer than 5 fields; the file is damaged")
    if not ELEMENTS.keys() >= set(symbols):
        raise DataError(f"{source}: unknown element symbols {sorted(set(symbols) - ELEMENTS.keys())}; QM9 holds only "
                        f"{sorted(ELEMENTS)}; the file is damaged")
    into.index.append(index)
    into.n_atoms.append(n)
    into.symbols.extend(symbols)
    into.coordinates.extend(coordinates)
    into.charges.extend(charges)
    into.values.extend(values)


def read_tarball(path: str | Path) -> ParsedMolecules:
    """Every ``dsgdb9nsd_NNNNNN.xyz`` of the tarball, read streaming (mode ``r:bz2``, nothing extracted).

    One process: bz2 decompression and tar framing take most of the time, and parsing in worker
    processes made it slower on 2 cores (benchmarks/test_qm9_prepare.py)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"QM9 tarball not found: {path}")
    parsed = ParsedMolecules()
    names: list[int] = []
    try:
        with tarfile.open(path, mode="r:bz2") as tar:
            for member in tar:
                match = MEMBER.fullmatch(PurePosixPath(member.name).name)
                if not member.isfile() or match is None:
                    continue
                source = f"{path}:{member.name}"
                data = tar.extractfile(member).read()
                try:
                    text = data.decode("ascii")
                except UnicodeDecodeError as err:
                    raise DataError(f"{source}: not a text file ({err}); the archive is damaged, delete it to "
                                    f"download it again") from err
                parse_xyz(text, source, parsed)
                names.append(int(match.group(1)))
    except (tarfile.TarError, EOFError, OSError) as err:  # truncated bz2: EOFError; damaged: OSError
        raise DataError(f"{path} is not a complete bz2 tarball ({type(err).__name__}: {err}); delete it to download "
                        f"it again") from err
    if not parsed.index:
        raise DataError(f"{path} holds no dsgdb9nsd_NNNNNN.xyz files; is it the QM9 tarball?")
    disagree = [(n, i) for n, i in zip(names, parsed.index) if n != i]
    if disagree:
        raise DataError(f"{path}: dsgdb9nsd_{disagree[0][0]:06d}.xyz says it is molecule {disagree[0][1]}; the "
                        f"archive is damaged")
    return parsed


# ---------------------------------------------------------------------- the dataset
def build_dataset(parsed: ParsedMolecules, atomrefs: dict[str, np.ndarray], uncharacterized: np.ndarray | None,
                  properties: Sequence[str] = DEFAULT_PROPERTIES, source: str = "qm9") -> AtomisticDataset:
    """Molecules sorted by index, the uncharacterized ones dropped (``uncharacterized=None`` keeps them)."""
    unknown = sorted(set(properties) - set(DEFAULT_PROPERTIES) - set(OPTIONAL_PROPERTIES))
    if unknown:
        raise DataError(f"QM9 has no properties {unknown}; choose from {DEFAULT_PROPERTIES + OPTIONAL_PROPERTIES}")
    index = np.array(parsed.index, dtype=np.int64)
    n_atoms = np.array(parsed.n_atoms, dtype=np.int64)
    values = np.array(parsed.values, dtype=np.float64).reshape(len(index), len(COLUMNS))
    z = np.array([ELEMENTS[s] for s in parsed.symbols], dtype=np.int64)
    pos = np.array(parsed.coordinates, dtype=np.float64).reshape(-1, 3)
    charges = np.array(parsed.charges, dtype=np.float64)
    if len(np.unique(index)) != len(index):
        raise DataError(f"{source}: a molecule index appears twice; the archive is damaged")

    keep = np.argsort(index, kind="stable")
    if uncharacterized is not None:
        keep = keep[~np.isin(index[keep], uncharacterized)]
    starts = np.concatenate([[0], np.cumsum(n_atoms)])[keep]
    n_kept = n_atoms[keep]
    atom_idx = np.repeat(starts, n_kept) + np.arange(n_kept.sum()) - np.repeat(np.cumsum(n_kept) - n_kept, n_kept)
    z, pos, charges = z[atom_idx], pos[atom_idx], charges[atom_idx]
    index, n_atoms, values = index[keep], n_atoms[keep], values[keep]
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])

    column = {name: values[:, k] for k, name in enumerate(COLUMNS)}
    to_mev = hartree_to_mev()
    for name in ATOMIZATION:
        reference = np.add.reduceat(atomrefs[name][z], offsets[:-1]) if len(z) else np.zeros(0)
        column[name] = (column[name] - reference) * to_mev
    for name in ("homo", "lumo", "gap", "zpve"):
        column[name] = column[name] * to_mev
    column["index"] = index
    props = {}
    for name in properties:
        if name == "mulliken_charges":
            props[name] = Property(charges, UNITS[name], True)
        else:
            props[name] = Property(column[name], UNITS[name], False)
    refs = {"Cv": atomrefs["Cv"].copy()} if "Cv" in properties else {}
    metadata = {
        "dataset": "qm9",
        "reference": "Ramakrishnan, Dral, Rupp, von Lilienfeld, Sci. Data 1, 140022 (2014); figshare 978904",
        "energies": "homo, lumo, gap, zpve in meV; U0, U, H, G are atomization energies in meV (total minus the "
                    "sum of atomref.txt references); Hartree to meV with ase.units.Hartree",
        "hartree_to_mev": to_mev,
        "atomrefs_hartree": {s: {c: float(atomrefs[c][zz]) for c in ATOMREF_COLUMNS} for s, zz in ELEMENTS.items()},
        "uncharacterized_dropped": 0 if uncharacterized is None else int(len(parsed.index) - len(keep)),
    }
    return AtomisticDataset(z=z, pos=pos, offsets=offsets, properties=props, atomrefs=refs, metadata=metadata,
                            source=source)


def default_cache_name(keep_uncharacterized: bool = False, properties: Sequence[str] | None = None) -> str:
    name = "qm9"
    if keep_uncharacterized:
        name += "-with-uncharacterized"
    if properties is not None and tuple(properties) != DEFAULT_PROPERTIES:
        name += "-" + "-".join(sorted(properties)).replace("_", "")
    return name + ".h5"


def prepare(directory: str | Path | None = None, out: str | Path | None = None, keep_uncharacterized: bool = False,
            properties: Sequence[str] | None = None, download: bool = True) -> Path:
    """Build the QM9 cache from the published files in ``directory`` (default ``$EQBENCH_DATA/qm9``),
    downloading the missing ones; returns the cache path (default ``<directory>/qm9.h5``)."""
    from eqbench.data.cache import write_cache

    directory = Path(directory) if directory is not None else data_root() / "qm9"
    out = Path(out) if out is not None else directory / default_cache_name(keep_uncharacterized, properties)
    needed = [TARBALL, ATOMREF] + ([] if keep_uncharacterized else [UNCHARACTERIZED])
    sources = fetch(needed, directory, download=download)
    atomrefs = parse_atomref(_read_text(sources[ATOMREF.name].path), str(sources[ATOMREF.name].path))
    uncharacterized = None
    if not keep_uncharacterized:
        uncharacterized = parse_uncharacterized(_read_text(sources[UNCHARACTERIZED.name].path))
    parsed = read_tarball(sources[TARBALL.name].path)
    if len(parsed.index) == N_PUBLISHED and uncharacterized is not None and len(uncharacterized) != N_UNCHARACTERIZED:
        raise DataError(f"{sources[UNCHARACTERIZED.name].path} lists {len(uncharacterized)} molecules; the published "
                        f"list has {N_UNCHARACTERIZED}. It is damaged or another file: delete it to download it again")
    dataset = build_dataset(parsed, atomrefs, uncharacterized, properties or DEFAULT_PROPERTIES,
                            source=str(sources[TARBALL.name].path))
    dataset.metadata["sources"] = {name: s.record() for name, s in sources.items()}
    dataset.metadata["molecules_in_archive"] = len(parsed.index)
    write_cache(dataset, out)
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not a text file ({err}); delete it to download it again") from err


# ---------------------------------------------------------------------- split protocols
@register_protocol("qm9-110k")
def qm9_110k(candidates: np.ndarray, seed: int, train: Size = 110_000, val: Size = 10_000, test: Size = None):
    """PaiNN §5.1: 110,000 training and 10,000 validation molecules, the rest (10,831) test."""
    return random_split(candidates, seed, train, val, test)


@register_protocol("qm9-dimenet")
def qm9_dimenet(candidates: np.ndarray, seed: int, train: Size = 110_000, val: Size = 10_000, test: Size = 10_831):
    """DimeNet: 110,000 / 10,000 / 10,831 of the 130,831 characterized molecules."""
    return random_split(candidates, seed, train, val, test)


@register_protocol("qm9-109k")
def qm9_109k(candidates: np.ndarray, seed: int, train: Size = 109_000, val: Size = 1_000, test: Size = None):
    """Miller et al. (e3nn L0/L1 nets): 109,000 training, 1,000 validation, the rest test."""
    return random_split(candidates, seed, train, val, test)
