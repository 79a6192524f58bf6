"""In-memory dataset of molecules stored as ragged arrays.

``z``/``pos`` and per-atom properties are concatenated over molecules with ``offsets``
([B+1]) marking where each molecule starts; per-molecule properties have leading
dimension B. :meth:`AtomisticDataset.__getitems__` gathers a whole batch with index
arithmetic (no Python loop per molecule), which is what the DataLoader calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from eqbench.batch import Batch
from eqbench.errors import DataError, MissingPropertyError
from eqbench.geometry import _segment_arange, radius_graph
from eqbench.units import check_unit

MAX_Z = 118
# Two atoms closer than this are "at the same position": no real structure has them.
COINCIDENT_ATOMS = 0.01  # Å


@dataclass
class Property:
    values: np.ndarray
    unit: str
    per_atom: bool


@dataclass
class AtomisticDataset:
    z: np.ndarray  # [N] int
    pos: np.ndarray  # [N, 3] Å
    offsets: np.ndarray  # [B+1] int64
    properties: dict[str, Property] = field(default_factory=dict)
    atomrefs: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [MAX_Z+1] per element
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"  # file it came from, for error messages
    fingerprint: str | None = None
    validate: bool = True

    def __post_init__(self):
        self.z = np.asarray(self.z, dtype=np.int64)
        self.pos = np.asarray(self.pos)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        for name, prop in self.properties.items():  # every source (reader, cache, generator) passes here
            check_unit(prop.unit, f"{self.source}: property {name!r}")
        if self.validate:
            check_molecules(self.z, self.pos, self.offsets, self.source)
            for name, prop in self.properties.items():
                expected = len(self.z) if prop.per_atom else len(self)
                if len(prop.values) != expected:
                    raise DataError(
                        f"{self.source}: property {name!r} has {len(prop.values)} rows, expected {expected} "
                        f"({'atoms' if prop.per_atom else 'molecules'}); the file is inconsistent, rebuild it"
                    )
        self._tensors: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_molecules(cls, numbers: Sequence[np.ndarray], positions: Sequence[np.ndarray],
                       properties: Mapping[str, Sequence] | None = None, units: Mapping[str, str] | None = None,
                       per_atom: Sequence[str] = (), **kwargs) -> AtomisticDataset:
        """Build from per-molecule lists. ``properties[name][b]`` is molecule b's value."""
        n = np.array([len(z) for z in numbers], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(n)])
        props = {}
        for name, values in (properties or {}).items():
            atomwise = name in per_atom
            arr = np.concatenate([np.asarray(v) for v in values]) if atomwise else np.asarray(values)
            props[name] = Property(arr, (units or {}).get(name, ""), atomwise)
        z = np.concatenate([np.asarray(x) for x in numbers]) if len(numbers) else np.zeros(0, np.int64)
        pos = np.concatenate([np.asarray(x, dtype=np.float64) for x in positions]) if len(positions) else \
            np.zeros((0, 3))
        return cls(z=z, pos=pos, offsets=offsets, properties=props, **kwargs)

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def units(self) -> dict[str, str]:
        return {k: p.unit for k, p in self.properties.items()}

    def require(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self.properties]
        if missing:
            raise MissingPropertyError(
                f"{self.source}: required propert{'y' if len(missing) == 1 else 'ies'} {missing} not in the "
                f"dataset; available: {sorted(self.properties)}. Choose targets from those, or rebuild the "
                f"cache with them"
            )

    # ------------------------------------------------------------------ batching
    def _as_tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            dtype = torch.get_default_dtype()
            self._tensors = {"z": torch.as_tensor(self.z), "pos": torch.as_tensor(self.pos, dtype=dtype),
                             "offsets": torch.as_tensor(self.offsets)}
            for name, prop in self.properties.items():
                values = torch.as_tensor(prop.values)
                # Per-molecule float64 targets stay float64: totals such as energies need the digits
                # (see eqbench.heads.Atomwise); per-atom arrays take the default dtype.
                keep = not values.is_floating_point() or (values.dtype == torch.float64 and not prop.per_atom)
                self._tensors["prop:" + name] = values if keep else values.to(dtype)
        return self._tensors

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """Gather molecules ``indices`` into one Batch by vectorised indexing."""
        t = self._as_tensors()
        idx = torch.as_tensor(indices, dtype=torch.long)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"{self.source}: molecule index out of range [0, {len(self)})")
        idx = idx % max(len(self), 1)
        start = t["offsets"][idx]
        n_atoms = t["offsets"][idx + 1] - start
        atom_idx = torch.repeat_interleave(start, n_atoms) + _segment_arange(n_atoms)
        per_atom = frozenset(k for k, p in self.properties.items() if p.per_atom)
        targets = {name: t["prop:" + name][atom_idx if name in per_atom else idx] for name in self.properties}
        return Batch(
            z=t["z"][atom_idx],
            pos=t["pos"][atom_idx],
            batch=torch.repeat_interleave(torch.arange(len(idx)), n_atoms),
            n_atoms=n_atoms,
            targets=targets,
            per_atom=per_atom,
            idx=idx,
        )

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([int(index)])

    def subset(self, indices: Sequence[int]) -> AtomisticDataset:
        """A new dataset of the molecules ``indices`` (arrays copied)."""
        idx = np.asarray(indices, dtype=np.int64)
        n = self.n_atoms[idx]
        atom_idx = np.repeat(self.offsets[idx], n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        props = {k: Property(p.values[atom_idx if p.per_atom else idx], p.unit, p.per_atom)
                 for k, p in self.properties.items()}
        return AtomisticDataset(self.z[atom_idx], self.pos[atom_idx], np.concatenate([[0], np.cumsum(n)]),
                                props, dict(self.atomrefs), dict(self.metadata), self.source, validate=False)

    def to_atoms(self, index: int):
        """Molecule ``index`` as an ASE Atoms object (properties in ``info``/``arrays``)."""
        from ase import Atoms

        a, b = self.offsets[index], self.offsets[index + 1]
        atoms = Atoms(numbers=self.z[a:b], positions=self.pos[a:b])
        for name, prop in self.properties.items():
            if prop.per_atom:
                atoms.arrays[name] = prop.values[a:b]
            else:
                atoms.info[name] = prop.values[index]
        return atoms


def check_molecules(z: np.ndarray, pos: np.ndarray, offsets: np.ndarray, source: str,
                    chunk: int = 20000) -> None:
    """Raise DataError naming the molecule index for empty molecules, bad coordinates or elements."""
    n = np.diff(offsets)
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(z) or len(pos) != len(z):
        raise DataError(f"{source}: offsets, atomic numbers and positions disagree in length; rebuild the file")
    if (n <= 0).any():
        raise DataError(f"{source}: molecule {int(np.argmax(n <= 0))} has no atoms; remove it from the input")
    mol_of_atom = np.repeat(np.arange(len(n)), n)
    bad = ~np.isfinite(pos).all(axis=1)
    if bad.any():
        raise DataError(f"{source}: molecule {int(mol_of_atom[np.argmax(bad)])} has NaN or infinite positions "
                        f"(atom {int(np.argmax(bad))}); fix or remove it")
    bad = (z < 1) | (z > MAX_Z)
    if bad.any():
        a = int(np.argmax(bad))
        raise DataError(f"{source}: molecule {int(mol_of_atom[a])} has unknown element Z={int(z[a])}; "
                        f"atomic numbers must be 1..{MAX_Z}")
    for start in range(0, len(n), chunk):
        stop = min(start + chunk, len(n))
        a, b = offsets[start], offsets[stop]
        nn = torch.as_tensor(n[start:stop])
        graph = radius_graph(torch.as_tensor(pos[a:b], dtype=torch.float64),
                             torch.repeat_interleave(torch.arange(len(nn)), nn), nn, COINCIDENT_ATOMS)
        if len(graph.center):
            i, j = int(graph.center[0]) + a, int(graph.neighbor[0]) + a
            raise DataError(f"{source}: molecule {int(mol_of_atom[i])} has two atoms at the same position "
                            f"(atoms {i} and {j}, closer than {COINCIDENT_ATOMS} Å); fix or remove it")
