"""The HDF5 cache: one file of ragged arrays per dataset.

Layout::

    /z [N] int8, /pos [N,3], /offsets [B+1] int64
    /properties/<name>   attrs: unit, per_atom
    /atomrefs/<name>     [MAX_Z+1] reference value per element (optional)
    attrs: format, metadata (JSON: source checksums, generator command, ...), fingerprint, complete

A cache is written to a temporary file beside its final path and renamed when complete,
so an interrupted build never leaves a file that looks valid. The fingerprint is the
sha256 of the content (arrays, units, atom references) and is recorded in every run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np

from eqbench import __version__
from eqbench.data.dataset import AtomisticDataset, Property
from eqbench.errors import DataError

CACHE_FORMAT = 1


def fingerprint(dataset: AtomisticDataset) -> str:
    """sha256 of the dataset's content; independent of file layout and compression."""
    h = hashlib.sha256()

    def add(name: str, arr: np.ndarray, extra: str = "") -> None:
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|{extra}".encode())
        h.update(arr.tobytes())

    add("z", dataset.z.astype(np.int64))
    add("pos", dataset.pos)
    add("offsets", dataset.offsets)
    for name in sorted(dataset.properties):
        p = dataset.properties[name]
        add("property:" + name, p.values, f"{p.unit}|{p.per_atom}")
    for name in sorted(dataset.atomrefs):
        add("atomref:" + name, dataset.atomrefs[name])
    return h.hexdigest()


def write_cache(dataset: AtomisticDataset, path: str | os.PathLike, compression: str | None = "gzip") -> str:
    """Write ``dataset`` to ``path`` atomically; returns its fingerprint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(dataset)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    metadata = {**dataset.metadata, "eqbench_version": __version__}
    opts = {"compression": compression} if compression else {}
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = CACHE_FORMAT
            f.attrs["metadata"] = json.dumps(metadata, sort_keys=True, default=str)
            f.attrs["fingerprint"] = fp
            f.create_dataset("z", data=dataset.z.astype(np.int8 if dataset.z.max(initial=0) < 128 else np.int16),
                             **opts)
            f.create_dataset("pos", data=dataset.pos, **opts)
            f.create_dataset("offsets", data=dataset.offsets, **opts)
            group = f.create_group("properties")
            for name, prop in dataset.properties.items():
                ds = group.create_dataset(name, data=prop.values, **opts)
                ds.attrs["unit"] = prop.unit
                ds.attrs["per_atom"] = prop.per_atom
            refs = f.create_group("atomrefs")
            for name, values in dataset.atomrefs.items():
                refs.create_dataset(name, data=values)
            f.attrs["complete"] = True  # written last: a file without it is never used
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dataset.fingerprint = fp
    return fp


def read_cache(path: str | os.PathLike, validate: bool = False) -> AtomisticDataset:
    """Load a cache written by :func:`write_cache`. ``validate`` re-checks every molecule."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"cache file not found: {path}; build it with `eqbench data prepare` or check the path")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path} is not a readable HDF5 file ({err}); delete it and prepare it again") from err
    # Damage inside an HDF5 file surfaces as any of these, depending on where it is (a damaged
    # object can even read as None).
    damaged = (KeyError, OSError, RuntimeError, TypeError, ValueError)
    try:
        with f:
            if f.attrs.get("format") is None or not f.attrs.get("complete", False):
                raise DataError(f"{path} is not a complete eqbench cache (interrupted build or another kind of "
                                f"HDF5 file); delete it and prepare it again")
            if int(f.attrs["format"]) > CACHE_FORMAT:
                raise DataError(f"{path} has cache format {int(f.attrs['format'])}, newer than this eqbench "
                                f"({CACHE_FORMAT}); upgrade eqbench")
            properties = {
                name: Property(ds[()], str(ds.attrs["unit"]), bool(ds.attrs["per_atom"]))
                for name, ds in f["properties"].items()
            }
            dataset = AtomisticDataset(
                z=f["z"][()], pos=f["pos"][()], offsets=f["offsets"][()], properties=properties,
                atomrefs={name: ds[()] for name, ds in f["atomrefs"].items()},
                metadata=json.loads(f.attrs["metadata"]), source=str(path),
                fingerprint=str(f.attrs["fingerprint"]), validate=validate,
            )
    except damaged as err:
        raise DataError(f"{path} is corrupt ({type(err).__name__}: {err}); delete it and prepare it again") from err
    if fingerprint(dataset) != dataset.fingerprint:
        raise DataError(f"{path} is corrupt: its content does not match the fingerprint it was written with; "
                        f"delete it and prepare it again")
    return dataset


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a cache without loading its arrays."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["metadata"])
