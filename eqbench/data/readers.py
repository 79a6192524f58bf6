"""``eqbench.data.read``: any supported file, bundled set or published dataset name → AtomisticDataset.

Formats: the eqbench HDF5 cache (``.h5``/``.hdf5``), extended XYZ (``.xyz``/``.extxyz``,
through ASE) and ASE databases (``.db``, as written by ASE or schnetpack). extxyz stores
no units, so they must be given; an ASE database written by schnetpack carries them in
its metadata (``_property_unit_dict``, ``_distance_unit``), which is used when present.

Published datasets by name (``qm9``, ``md17-<molecule>``, ``rmd17-<molecule>``, ``qm7x``) are read
from their cache under ``$EQBENCH_DATA`` (default ``~/.cache/eqbench/data``), which is prepared from
the raw files there, downloaded when absent, on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from eqbench.batch import ase_output_is_per_atom, is_per_atom_result
from eqbench.data.cache import read_cache
from eqbench.data.dataset import AtomisticDataset
from eqbench.errors import DataError

BUNDLED = {
    "ferrocene": "ferrocene.h5",
    "ferrocene-profile": "ferrocene_profile.h5",
    "cumulene": "cumulene.h5",
    "cumulene-profile": "cumulene_profile.h5",
}
FORMATS = ("cache", "extxyz", "ase-db")
_SUFFIX_FORMAT = {".h5": "cache", ".hdf5": "cache", ".xyz": "extxyz", ".extxyz": "extxyz", ".db": "ase-db"}


def bundled_path(name: str) -> Path:
    """Path of a dataset shipped inside the package."""
    return Path(str(resources.files("eqbench.data") / "bundled" / BUNDLED[name]))


def detect_format(path: Path) -> str:
    fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; pass "
                        f"format= one of {FORMATS}")
    return fmt


def read(path_or_name: str | os.PathLike, format: str | None = None, units: Mapping[str, str] | None = None,
         properties: Sequence[str] | None = None, distance_unit: str | None = None) -> AtomisticDataset:
    """Read a dataset.

    Args:
        path_or_name: a file, the name of a bundled dataset (``ferrocene``, ``cumulene``,
            ``ferrocene-profile``, ``cumulene-profile``) or of a published one (``qm9``,
            ``md17-<molecule>``, ``rmd17-<molecule>``, ``qm7x``; prepared in ``$EQBENCH_DATA`` on first use).
        format: ``cache``, ``extxyz`` or ``ase-db``; detected from the suffix when omitted.
        units: unit of each property (e.g. ``{"energy": "eV", "forces": "eV/Å"}``); required for
            extxyz; for an ASE db it overrides the file's own unit metadata.
        properties: which properties to read (default: every numeric one found in the first frame).
        distance_unit: unit of the positions in the file when not Å (``Bohr`` or ``Ang``); read
            from schnetpack metadata when present.
    """
    if str(path_or_name) in BUNDLED and not Path(path_or_name).is_file():
        path = bundled_path(str(path_or_name))
        if not path.is_file():
            raise DataError(f"bundled dataset {path_or_name!r} is missing from the installation ({path}); "
                            f"reinstall eqbench or regenerate it with `eqbench data generate`")
        return read_cache(path)
    if is_dataset_name(str(path_or_name)) and not Path(path_or_name).exists():
        return read_cache(named_cache(str(path_or_name)))
    path = Path(path_or_name)
    if not path.exists():
        raise DataError(f"file not found: {path}; check the path (bundled names: {sorted(BUNDLED)}; published "
                        f"datasets: {', '.join(DATASET_NAMES)})")
    fmt = format or detect_format(path)
    if fmt == "cache":
        return read_cache(path)
    if fmt == "extxyz":
        return _read_extxyz(path, units, properties, distance_unit)
    if fmt == "ase-db":
        return _read_ase_db(path, units, properties, distance_unit)
    raise DataError(f"{path}: unknown format {fmt!r}; choose one of {FORMATS}")


# ---------------------------------------------------------------------- published datasets by name
DATASET_NAMES = ("qm9", "md17-<molecule>", "rmd17-<molecule>", "qm7x")
FAMILIES = ("qm9", "md17", "rmd17", "qm7x")


def is_dataset_name(name: str) -> bool:
    return name in ("qm9", "qm7x") or name.startswith(("md17-", "rmd17-"))


def named_cache(name: str, download: bool = True) -> Path:
    """The cache of a published dataset under ``$EQBENCH_DATA``, prepared there when absent."""
    from eqbench.data.download import data_root

    family, _, molecule = name.partition("-")
    if family in ("md17", "rmd17"):
        from eqbench.data.md17 import molecule_name

        molecule = molecule_name(molecule, revised=family == "rmd17")
        path = data_root() / family / f"{family}-{molecule}.h5"
    else:
        path = data_root() / family / f"{family}.h5"
    if not path.is_file():
        prepare_named(family, molecules=[molecule] if molecule else None, download=download)
    return path


def prepare_named(family: str, directory: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                  molecules: Sequence[str] | None = None, download: bool = True, keep_uncharacterized: bool = False,
                  properties: Sequence[str] | None = None, source: str = "auto") -> list[Path]:
    """Build the cache(s) of a published dataset (``qm9``, ``md17``, ``rmd17``, ``qm7x``; or one molecule,
    ``md17-aspirin``) from its raw files in ``directory`` (default ``$EQBENCH_DATA/<family>``); returns
    the cache paths. For md17/rmd17 ``molecules`` defaults to all, and ``out`` is a file for one molecule
    or a directory. ``source`` picks QM9's source (``auto``, ``tarball``, ``qm9pack``; see
    :func:`eqbench.data.qm9.prepare`)."""
    family, _, molecule = family.partition("-")
    if molecule:
        molecules = [molecule]
    if family not in FAMILIES:
        raise DataError(f"unknown dataset {family!r}; published datasets: {', '.join(FAMILIES)}")
    if family != "qm9" and keep_uncharacterized:
        raise DataError("--keep-uncharacterized applies to qm9 only")
    if family != "qm9" and source != "auto":
        raise DataError(f"--source applies to qm9 only, not {family}")
    if family in ("qm9", "qm7x") and molecules:
        raise DataError(f"{family} has no molecules to choose; --molecule is for md17 and rmd17")
    if family == "qm9":
        from eqbench.data import qm9

        return [qm9.prepare(directory, out, keep_uncharacterized, properties, download=download, source=source)]
    if family == "qm7x":
        from eqbench.data import qm7x

        return [qm7x.prepare(directory, out, properties, download=download)]
    from eqbench.data import md17

    if family == "rmd17":
        return list(md17.prepare_rmd17(molecules, directory, out, download, properties or ()).values())
    if properties:
        raise DataError("MD17 caches always hold energy and forces; --properties does not apply")
    names = [md17.molecule_name(m, revised=False) for m in (molecules or md17.MD17_FILES)]
    if out is not None and Path(out).suffix in (".h5", ".hdf5") and len(names) != 1:
        raise DataError(f"--out {out} is one file but {len(names)} molecules were asked for; give a directory")
    outs = {m: None if out is None else Path(out) if Path(out).suffix in (".h5", ".hdf5")
            else Path(out) / f"md17-{m}.h5" for m in names}
    return [md17.prepare_md17(m, directory, outs[m], download) for m in names]


def _length_factor(unit: str | None, source: Path) -> float:
    from ase import units as ase_units

    if unit is None or unit.lower() in ("ang", "angstrom", "å", "a"):
        return 1.0
    if unit.lower() in ("bohr", "a0"):
        return ase_units.Bohr
    raise DataError(f"{source}: unknown distance unit {unit!r}; use 'Ang' or 'Bohr'")


def _frames_to_dataset(frames: list, source: Path, units: Mapping[str, str], properties: Sequence[str] | None,
                       length_factor: float, metadata: dict) -> AtomisticDataset:
    if not frames:
        raise DataError(f"{source} holds no structures")
    names = list(properties) if properties is not None else _numeric_properties(frames[0])
    per_atom, values = set(), {name: [] for name in names}
    for index, atoms in enumerate(frames):
        for name in names:
            value, atomwise = _property_of(atoms, name, index, source)
            values[name].append(value)
            if atomwise:
                per_atom.add(name)
    missing_units = [n for n in names if n not in units]
    if missing_units:
        raise DataError(f"{source}: no unit given for {missing_units}; pass units={{name: unit}} "
                        f"(extxyz files do not store units)")
    return AtomisticDataset.from_molecules(
        [a.numbers for a in frames], [a.positions * length_factor for a in frames],
        {n: values[n] for n in names}, units, per_atom=sorted(per_atom),
        metadata={**metadata, "source_file": str(source)}, source=str(source))


def _db_per_atom_keys(rows) -> set[str]:
    """Keys of ``row.data``/``key_value_pairs`` that hold one row per atom.

    ASE's table of outputs decides for the names it knows. Otherwise a key is per atom when its
    leading dimension is the molecule's atom count in every row and some row has more than one
    atom: a one-atom molecule cannot tell (schnetpack stores a per-molecule energy as shape (1,)).
    """
    fits: dict[str, bool] = {}
    evidence: set[str] = set()
    for row in rows:
        n = row.natoms
        for key, value in {**row.key_value_pairs, **row.data}.items():
            arr = np.asarray(value)
            ok = arr.ndim >= 1 and arr.shape[0] == n
            fits[key] = fits.get(key, True) and ok
            if ok and n > 1:
                evidence.add(key)
    per_atom = set()
    for key, ok in fits.items():
        known = ase_output_is_per_atom(key)
        if known is None:
            known = ok and key in evidence
        if known:
            per_atom.add(key)
    return per_atom


def _numeric_properties(atoms) -> list[str]:
    skip = {"numbers", "positions"}
    names = [k for k, v in atoms.arrays.items() if k not in skip and np.issubdtype(np.asarray(v).dtype, np.number)]
    names += [k for k, v in atoms.info.items() if np.issubdtype(np.asarray(v).dtype, np.number)]
    if atoms.calc is not None:
        names += [k for k in atoms.calc.results if k not in names]
    return names


def _property_of(atoms, name: str, index: int, source: Path):
    if name in atoms.arrays:
        return np.asarray(atoms.arrays[name], dtype=float), True
    if name in atoms.info:
        value = np.asarray(atoms.info[name], dtype=float)
        return (value.reshape(()) if value.size == 1 else value), False  # schnetpack stores energy as (1,)
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    if name in results:
        value = np.asarray(results[name], dtype=float)
        return value, is_per_atom_result(name, value, len(atoms))
    raise DataError(f"{source}: structure {index} has no property {name!r}; remove it from properties= or fix "
                    f"the file")


def _read_extxyz(path: Path, units, properties, distance_unit) -> AtomisticDataset:
    from ase.io import read as ase_read

    try:
        frames = ase_read(path, index=":", format="extxyz")
    except (OSError, ValueError, IndexError, KeyError, AssertionError) as err:  # ase's XYZError is an OSError
        raise DataError(f"{path} is not valid extended XYZ ({type(err).__name__}: {err}); fix the file") from err
    return _frames_to_dataset(frames, path, dict(units or {}), properties,
                              _length_factor(distance_unit, path), {"format": "extxyz"})


def _read_ase_db(path: Path, units, properties, distance_unit) -> AtomisticDataset:
    import sqlite3

    from ase.db import connect

    try:
        db = connect(str(path), type="db")
        meta = db.metadata
        rows = list(db.select())
    except (sqlite3.DatabaseError, ValueError, KeyError) as err:
        raise DataError(f"{path} is not a readable ASE database ({err}); fix or regenerate it") from err
    file_units = dict(meta.get("_property_unit_dict", {}))
    per_atom = _db_per_atom_keys(rows)
    frames = []
    for row in rows:
        atoms = row.toatoms()
        # schnetpack keeps properties in row.data; ASE in key_value_pairs and calculator results.
        for key, value in {**row.key_value_pairs, **row.data}.items():
            arr = np.asarray(value)
            if key in per_atom:
                atoms.arrays[key] = arr
            elif np.issubdtype(arr.dtype, np.number):
                # schnetpack gives per-molecule values a leading axis of length 1: energy (1,), dipole (1, 3)
                atoms.info[key] = arr[0] if arr.ndim >= 1 and arr.shape[0] == 1 else (arr if arr.ndim else arr.item())
        frames.append(atoms)
    return _frames_to_dataset(frames, path, {**file_units, **(units or {})}, properties,
                              _length_factor(distance_unit or meta.get("_distance_unit"), path),
                              {"format": "ase-db", "db_metadata": {k: v for k, v in meta.items()
                                                                   if isinstance(v, (str, int, float, dict))}})
