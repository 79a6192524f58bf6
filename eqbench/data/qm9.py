"""QM9 (Ramakrishnan et al. 2014) from the published files, and the papers' split protocols.

Two sources give the same cache (same properties, units, molecule order and fingerprint):

- ``tarball``: the figshare files (collection 978904), looked for in the dataset directory and
  downloaded when absent: ``dsgdb9nsd.xyz.tar.bz2`` (133,885 xyz files, read streaming from the
  tarball, never extracted), ``atomref.txt`` and ``uncharacterized.txt``.
- ``qm9pack``: the CSV files of the ``qm9pack`` wheel on the package registry (``pip install
  'eqbench[qm9]'``; by R. Ramakrishnan, first author of QM9), which hold the 130,831 characterized
  molecules with the 15 properties of the xyz files in their original units, plus the full static
  polarizability tensor. The files are found with ``importlib.metadata`` and read directly; the
  package itself is never imported. Their sha256 is checked against the wheel's RECORD. The atom
  references are the published ``atomref.txt`` values (:data:`ATOMREF_HARTREE`), or the file itself
  when it is in the dataset directory.

``source="auto"`` (the default) takes a tarball already in the dataset directory, else qm9pack when it
is installed, else downloads the tarball.

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

Optional: ``A``, ``B``, ``C`` (rotational constants, GHz), per-atom ``mulliken_charges`` (e) and, from
qm9pack only, ``alpha_tensor`` (a0^3, [B, 3, 3] symmetric; its trace / 3 is ``alpha``), the target of
PaiNN's polarizability head (Eq. 14).
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
from eqbench.data.download import Checksum, OfflineError, RemoteFile, data_root, fetch
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
         "Cv": "cal/(mol K)", "index": "", "mulliken_charges": "e", "alpha_tensor": "a0^3"}
DEFAULT_PROPERTIES = ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv", "index")
OPTIONAL_PROPERTIES = ("A", "B", "C", "mulliken_charges", "alpha_tensor")
N_CHARACTERIZED = N_PUBLISHED - N_UNCHARACTERIZED
# atomref.txt (figshare 3195395) as published: ZPVE, U (0 K), U, H, G (298.15 K) in Hartree, Cv in cal/(mol K).
ATOMREF_HARTREE = {
    "H": (0.000000, -0.500273, -0.498857, -0.497912, -0.510927, 2.981),
    "C": (0.000000, -37.846772, -37.845355, -37.844411, -37.861317, 2.981),
    "N": (0.000000, -54.583861, -54.582445, -54.581501, -54.598897, 2.981),
    "O": (0.000000, -75.064579, -75.063163, -75.062219, -75.079532, 2.981),
    "F": (0.000000, -99.718730, -99.717314, -99.716370, -99.733544, 2.981),
}
SOURCES = ("auto", "tarball", "qm9pack")


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
            properties: Sequence[str] | None = None, download: bool = True, source: str = "auto",
            progress: bool | None = None) -> Path:
    """Build the QM9 cache in ``directory`` (default ``$EQBENCH_DATA/qm9``); returns the cache path
    (default ``<directory>/qm9.h5``).

    ``source``: ``tarball`` (the published files in ``directory``, downloading the missing ones),
    ``qm9pack`` (the CSV files of the installed ``qm9pack`` wheel) or ``auto``: a tarball already in
    ``directory``, else qm9pack when installed, else the download. ``progress``: show a progress bar
    (default: when writing to a terminal)."""
    directory = Path(directory) if directory is not None else data_root() / "qm9"
    out = Path(out) if out is not None else directory / default_cache_name(keep_uncharacterized, properties)
    properties = tuple(properties or DEFAULT_PROPERTIES)
    if source not in SOURCES:
        raise DataError(f"unknown QM9 source {source!r}; choose one of {', '.join(SOURCES)}")
    if source == "auto":
        source = _auto_source(directory, keep_uncharacterized, properties)
    if source == "qm9pack":
        if keep_uncharacterized:
            raise DataError("qm9pack holds only the 130,831 characterized molecules; to keep the uncharacterized "
                            "ones use the figshare tarball (--source tarball)")
        return _prepare_qm9pack(directory, out, properties, progress)
    if "alpha_tensor" in properties:
        raise DataError("alpha_tensor (the polarizability tensor) is not in the figshare tarball; it comes from "
                        "qm9pack: pip install 'eqbench[qm9]', then `eqbench data prepare qm9 --source qm9pack`")
    return _prepare_tarball(directory, out, keep_uncharacterized, properties, download)


def _auto_source(directory: Path, keep_uncharacterized: bool, properties: Sequence[str]) -> str:
    if keep_uncharacterized:
        return "tarball"
    if TARBALL.local(directory) is not None and "alpha_tensor" not in properties:
        return "tarball"
    return "qm9pack" if qm9pack_files(required=False) else "tarball"


def _prepare_tarball(directory: Path, out: Path, keep_uncharacterized: bool, properties: Sequence[str],
                     download: bool) -> Path:
    from eqbench.data.cache import write_cache

    needed = [TARBALL, ATOMREF] + ([] if keep_uncharacterized else [UNCHARACTERIZED])
    try:
        sources = fetch(needed, directory, download=download)
    except OfflineError as err:
        hint = ("\nqm9pack is installed and holds the same molecules: run `eqbench data prepare qm9 --source "
                "qm9pack` (Python: eqbench.data.qm9.prepare(source='qm9pack'))" if qm9pack_files(required=False)
                else "\nWithout a network: pip install 'eqbench[qm9]' (the qm9pack wheel of the package registry), "
                     "then run `eqbench data prepare qm9 --source qm9pack`")
        raise OfflineError(str(err) + hint) from err
    atomrefs = parse_atomref(_read_text(sources[ATOMREF.name].path), str(sources[ATOMREF.name].path))
    uncharacterized = None
    if not keep_uncharacterized:
        uncharacterized = parse_uncharacterized(_read_text(sources[UNCHARACTERIZED.name].path))
    parsed = read_tarball(sources[TARBALL.name].path)
    if len(parsed.index) == N_PUBLISHED and uncharacterized is not None and len(uncharacterized) != N_UNCHARACTERIZED:
        raise DataError(f"{sources[UNCHARACTERIZED.name].path} lists {len(uncharacterized)} molecules; the published "
                        f"list has {N_UNCHARACTERIZED}. It is damaged or another file: delete it to download it again")
    dataset = build_dataset(parsed, atomrefs, uncharacterized, properties, source=str(sources[TARBALL.name].path))
    dataset.metadata["source"] = "tarball"
    dataset.metadata["sources"] = {name: s.record() for name, s in sources.items()}
    dataset.metadata["molecules_in_archive"] = len(parsed.index)
    write_cache(dataset, out)
    return out


# ---------------------------------------------------------------------- the qm9pack wheel's CSV files
QM9PACK = "qm9pack"
QM9PACK_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
QM9PACK_POLARIZABILITY = "qm9_polarizability.csv"
CSV_HEADER = ("XYZ_file", "Index", "SMILES", "InChi", "N_atoms", "Stoichiometry", "Elements", "XYZ_Ang",
              "Mulliken_pop", "Harmonic_Freq_cmi", "RotA_GHz", "RotB_GHz", "RotC_GHz", "Dipole_debye",
              "Polarizability_bohr3", "HOMO_au", "LUMO_au", "HOMO_LUMO_gap_au", "R2_bohr2", "ZPVE_au",
              "InternalEnergy_0K_au", "InternalEnergy_298K_au", "Enthalphy_298K_au", "GibbsFreeEnergy_298K_au",
              "Heatcapacity_Cv_cal_mol_K")
POLARIZABILITY_HEADER = ("XYZ_file", "A_xx", "A_xy", "A_yy", "A_xz", "A_yz", "A_zz")


@dataclass(frozen=True)
class PackageFile:
    """A data file of an installed wheel and the sha256 its RECORD lists (hex; None when not listed)."""

    path: Path
    sha256: str | None


def qm9pack_files(required: bool = True) -> dict[str, PackageFile]:
    """The CSV files of the installed qm9pack wheel, by file name, found through
    ``importlib.metadata`` (the package is never imported: its ``__init__`` needs ``pkg_resources``).
    Empty when it is not installed and not ``required``."""
    import base64
    import importlib.metadata as metadata

    try:
        files = metadata.files(QM9PACK) or []
    except metadata.PackageNotFoundError:
        files = []
    wanted = {*QM9PACK_PARTS, QM9PACK_POLARIZABILITY}
    found: dict[str, PackageFile] = {}
    for f in files:
        if f.name in wanted and f.parent.name == "data":
            digest = None
            if f.hash is not None and f.hash.mode == "sha256":
                digest = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
            found[f.name] = PackageFile(Path(str(f.locate())), digest)
    if len(found) == len(wanted) or (not required and not found):
        return found
    if not found:
        raise DataError("qm9pack is not installed: pip install 'eqbench[qm9]' (or pip install qm9pack), or use "
                        "the figshare tarball (--source tarball)")
    raise DataError(f"the installed qm9pack lacks {sorted(wanted - found.keys())}; reinstall it: "
                    f"pip install --force-reinstall qm9pack")


def _check_csv_row(row: list[str], width: int, source: str, line: int) -> None:
    if len(row) != width:
        raise DataError(f"{source}, row {line}: {len(row)} fields, expected {width}; the file is damaged or "
                        f"truncated, reinstall it: pip install --force-reinstall qm9pack")


def read_qm9pack_csv(paths: Sequence[str | Path], into: ParsedMolecules | None = None,
                     progress: bool | None = None) -> ParsedMolecules:
    """Molecules of the qm9pack part files, in file order. Positions (Å), Mulliken charges and the 15
    values of the xyz files' line 2 are read as printed; each row's element, position and charge counts
    are checked against its ``N_atoms``. Errors name the file and the row (line number)."""
    import csv

    from tqdm.auto import tqdm

    parsed = into if into is not None else ParsedMolecules()
    pos_text: list[str] = []
    charge_text: list[str] = []
    width = len(CSV_HEADER)
    first = len(parsed.index)
    bar = tqdm(total=N_CHARACTERIZED, unit="mol", desc="qm9pack", disable=None if progress is None else not progress,
               mininterval=1.0)
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"QM9 CSV file not found: {path}; reinstall qm9pack: pip install --force-reinstall qm9pack")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(header) != CSV_HEADER:
                raise DataError(f"{path}, row 1: not a qm9pack QM9 table (header {header and header[:4]}...); "
                                f"reinstall it: pip install --force-reinstall qm9pack")
            count = 0
            try:
                for row in reader:
                    line = reader.line_num
                    _check_csv_row(row, width, str(path), line)
                    n = int(row[4])
                    symbols = row[6][1:-1].replace("'", "").split(",")
                    if len(symbols) != n or row[7].count(",") + 1 != 3 * n or row[8].count(",") + 1 != n:
                        raise DataError(f"{path}, row {line}: N_atoms is {n} but the row has {len(symbols)} elements, "
                                        f"{(row[7].count(',') + 1) / 3:g} positions and {row[8].count(',') + 1} "
                                        f"charges; the file is damaged, reinstall it: "
                                        f"pip install --force-reinstall qm9pack")
                    parsed.index.append(int(row[1]))
                    parsed.n_atoms.append(n)
                    parsed.symbols.extend(symbols)
                    pos_text.append(row[7])
                    charge_text.append(row[8])
                    parsed.values.extend(map(float, row[10:]))
                    count += 1
                    if count % 4096 == 0:
                        bar.update(4096)
            except ValueError as err:
                raise DataError(f"{path}, row {reader.line_num}: bad number ({err}); the file is damaged, "
                                f"reinstall it: pip install --force-reinstall qm9pack") from err
            except csv.Error as err:
                raise DataError(f"{path}, row {reader.line_num}: not valid CSV ({err}); the file is damaged, "
                                f"reinstall it: pip install --force-reinstall qm9pack") from err
            bar.update(count % 4096)
    bar.close()
    unknown = set(parsed.symbols) - ELEMENTS.keys()
    if unknown:
        at = next(k for k, s in enumerate(parsed.symbols) if s in unknown)
        molecule = int(np.searchsorted(np.cumsum(parsed.n_atoms), at, side="right"))
        raise DataError(f"molecule {parsed.index[molecule]}: unknown element symbols {sorted(unknown)}; QM9 holds "
                        f"only {sorted(ELEMENTS)}; the file is damaged, reinstall it: "
                        f"pip install --force-reinstall qm9pack")
    table = str.maketrans("", "", "[]")
    try:
        parsed.coordinates.extend(np.array(",".join(pos_text).translate(table).split(","), dtype=np.float64))
        parsed.charges.extend(np.array(",".join(charge_text).translate(table).split(","), dtype=np.float64))
    except ValueError as err:
        raise DataError(f"{', '.join(str(p) for p in paths)}: a position or charge is not a number ({err}); the file "
                        f"is damaged, reinstall it: pip install --force-reinstall qm9pack") from err
    if len(parsed.index) == first:
        raise DataError(f"{', '.join(str(p) for p in paths)} hold no molecules")
    return parsed


def read_qm9pack_polarizability(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(molecule indices [M], symmetric polarizability tensors [M, 3, 3] in a0^3) of
    ``qm9_polarizability.csv``; the index comes from each row's ``dsgdb9nsd_NNNNNN.xyz`` name."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise DataError(f"QM9 polarizability file not found: {path}; reinstall qm9pack")
    indices: list[int] = []
    values = array("d")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != POLARIZABILITY_HEADER:
            raise DataError(f"{path}, row 1: not qm9pack's polarizability table (header {header}); reinstall qm9pack")
        try:
            for row in reader:
                _check_csv_row(row, len(POLARIZABILITY_HEADER), str(path), reader.line_num)
                match = MEMBER.fullmatch(row[0])
                if match is None:
                    raise DataError(f"{path}, row {reader.line_num}: {row[0]!r} is not a dsgdb9nsd_NNNNNN.xyz name; "
                                    f"the file is damaged, reinstall qm9pack")
                indices.append(int(match.group(1)))
                values.extend(map(float, row[1:]))
        except ValueError as err:
            raise DataError(f"{path}, row {reader.line_num}: bad number ({err}); the file is damaged, reinstall "
                            f"qm9pack") from err
        except csv.Error as err:
            raise DataError(f"{path}, row {reader.line_num}: not valid CSV ({err}); reinstall qm9pack") from err
    xx, xy, yy, xz, yz, zz = np.array(values, dtype=np.float64).reshape(-1, 6).T
    tensors = np.stack([np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)], -2)
    return np.array(indices, dtype=np.int64), tensors


def builtin_atomrefs() -> dict[str, np.ndarray]:
    """:data:`ATOMREF_HARTREE` as :func:`parse_atomref` returns a file's rows."""
    refs = {name: np.zeros(MAX_Z + 1) for name in ATOMREF_COLUMNS}
    for symbol, values in ATOMREF_HARTREE.items():
        for name, value in zip(ATOMREF_COLUMNS, values):
            refs[name][ELEMENTS[symbol]] = value
    return refs


def _prepare_qm9pack(directory: Path, out: Path, properties: Sequence[str], progress: bool | None) -> Path:
    import importlib.metadata as metadata

    from eqbench.data.cache import write_cache
    from eqbench.data.download import file_digests

    files = qm9pack_files(required=True)
    records = {}
    for name, f in files.items():
        if name == QM9PACK_POLARIZABILITY and "alpha_tensor" not in properties:
            continue
        digests, size = file_digests(f.path)
        verified = None if f.sha256 is None else digests["sha256"] == f.sha256
        if verified is False:
            raise DataError(f"{f.path} differs from the sha256 in qm9pack's RECORD; the installation is damaged: "
                            f"pip install --force-reinstall qm9pack")
        records[name] = {"file": name, "md5": digests["md5"], "sha256": digests["sha256"], "size": size,
                         "verified": verified, "origin": f"qm9pack {metadata.version(QM9PACK)} ({f.path})"}
    local_atomref = ATOMREF.local(directory)
    if local_atomref is not None:
        atomrefs = parse_atomref(_read_text(local_atomref), str(local_atomref))
        records[ATOMREF.name] = fetch([ATOMREF], directory, download=False)[ATOMREF.name].record()
    else:
        atomrefs = builtin_atomrefs()
        records[ATOMREF.name] = {"file": ATOMREF.name, "origin": "eqbench's copy of the published values "
                                 "(eqbench.data.qm9.ATOMREF_HARTREE)"}
    parsed = read_qm9pack_csv([files[name].path for name in QM9PACK_PARTS], progress=progress)
    origin = str(files[QM9PACK_PARTS[0]].path.parent)
    scalars = [p for p in properties if p != "alpha_tensor"]
    dataset = build_dataset(parsed, atomrefs, None, list(dict.fromkeys([*scalars, "index"])), source=origin)
    if "alpha_tensor" in properties:
        add_alpha_tensor(dataset, *read_qm9pack_polarizability(files[QM9PACK_POLARIZABILITY].path),
                         str(files[QM9PACK_POLARIZABILITY].path))
    if "index" not in properties:
        del dataset.properties["index"]
    dataset.metadata.update({
        "source": "qm9pack", "qm9pack_version": metadata.version(QM9PACK), "sources": records,
        "molecules_in_archive": len(parsed.index),
        "uncharacterized_note": "qm9pack holds only the characterized molecules; none was dropped here"})
    write_cache(dataset, out)
    return out


def add_alpha_tensor(dataset: AtomisticDataset, indices: np.ndarray, tensors: np.ndarray, source: str) -> None:
    """Add ``alpha_tensor`` [B, 3, 3] to a QM9 dataset, matched to its molecules by index."""
    index = np.asarray(dataset.properties["index"].values, dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    at = np.searchsorted(indices[order], index)
    at = np.minimum(at, len(order) - 1)
    missing = index[indices[order][at] != index]
    if len(missing):
        raise DataError(f"{source}: no polarizability tensor for molecule {missing[0]} ({len(missing)} missing); "
                        f"the file is damaged, reinstall qm9pack")
    dataset.properties["alpha_tensor"] = Property(tensors[order][at], UNITS["alpha_tensor"], False)


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
