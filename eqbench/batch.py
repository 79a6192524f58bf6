"""Batch: the one in-memory representation of a set of molecules.

Atoms of all molecules are concatenated; ``batch[a]`` is the molecule of atom ``a``.
Targets are per-molecule (leading dimension B) or per-atom (leading dimension N); the
names of the per-atom ones are kept in ``per_atom`` so that single-atom molecules
(N == B) stay unambiguous. Periodic structures carry ``cell`` ([B, 3, 3], cell vectors as rows,
Å) and ``pbc`` ([B, 3] bool); both are None when no structure of the batch is periodic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from eqbench.errors import DataError


@dataclass
class Batch:
    z: torch.Tensor  # [N] long, atomic numbers
    pos: torch.Tensor  # [N, 3] positions (Å)
    batch: torch.Tensor  # [N] long, molecule index of each atom
    n_atoms: torch.Tensor  # [B] long
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    per_atom: frozenset[str] = frozenset()
    idx: torch.Tensor | None = None  # [B] dataset index of each molecule, when known
    cell: torch.Tensor | None = None  # [B, 3, 3] cell vectors as rows (periodic structures)
    pbc: torch.Tensor | None = None  # [B, 3] bool, periodic along each cell vector

    @property
    def n_molecules(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def ptr(self) -> torch.Tensor:
        """[B+1] offsets of each molecule's first atom."""
        return torch.cat([self.n_atoms.new_zeros(1), torch.cumsum(self.n_atoms, 0)])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """Move to ``device``; ``dtype`` (if given) converts positions and floating targets."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return replace(
            self,
            z=self.z.to(device),
            pos=move(self.pos),
            batch=self.batch.to(device),
            n_atoms=self.n_atoms.to(device),
            targets={k: move(v) for k, v in self.targets.items()},
            idx=None if self.idx is None else self.idx.to(device),
            cell=None if self.cell is None else move(self.cell),
            pbc=None if self.pbc is None else self.pbc.to(device),
        )

    def __len__(self) -> int:
        return self.n_molecules

    @classmethod
    def collate(cls, molecules: Sequence[Batch]) -> Batch:
        """Concatenate batches (collation is concatenation plus offsets)."""
        if not molecules:
            raise DataError("cannot collate an empty list of molecules")
        per_atom = molecules[0].per_atom
        keys = molecules[0].targets.keys()
        n_atoms = torch.cat([m.n_atoms for m in molecules])
        idx = None
        if all(m.idx is not None for m in molecules):
            idx = torch.cat([m.idx for m in molecules])
        cell = pbc = None
        if any(m.pbc is not None for m in molecules):
            cell = torch.cat([m.cell if m.cell is not None else m.pos.new_zeros(len(m), 3, 3) for m in molecules])
            pbc = torch.cat([m.pbc if m.pbc is not None else torch.zeros(len(m), 3, dtype=torch.bool)
                             for m in molecules])
        return cls(
            z=torch.cat([m.z for m in molecules]),
            pos=torch.cat([m.pos for m in molecules]),
            batch=torch.repeat_interleave(torch.arange(len(n_atoms)), n_atoms),
            n_atoms=n_atoms,
            targets={k: torch.cat([m.targets[k] for m in molecules]) for k in keys},
            per_atom=per_atom,
            idx=idx,
            cell=cell,
            pbc=pbc,
        )

    @classmethod
    def from_atoms(cls, atoms_list: Iterable, properties: Sequence[str] | None = None) -> Batch:
        """Build a batch from ASE ``Atoms``.

        ``properties`` names targets to take from each frame: per-atom arrays
        (``atoms.arrays``), scalars in ``atoms.info``, or results of an attached
        calculator (``energy``, ``forces``, ...). Units are whatever the frames hold.
        Periodic frames (``atoms.pbc``) keep their cell and periodic directions.
        """
        atoms_list = list(atoms_list)
        if not atoms_list:
            raise DataError("Batch.from_atoms got no structures")
        zs, poss, cells, pbcs, targets = [], [], [], [], {k: [] for k in properties or []}
        per_atom: set[str] = set()
        for i, atoms in enumerate(atoms_list):
            if len(atoms) == 0:
                raise DataError(f"structure {i} has no atoms; remove it")
            zs.append(torch.as_tensor(atoms.numbers, dtype=torch.long))
            poss.append(torch.as_tensor(np.asarray(atoms.positions), dtype=torch.get_default_dtype()))
            pbcs.append(torch.as_tensor(np.asarray(atoms.pbc, dtype=bool)))
            cells.append(torch.as_tensor(np.asarray(atoms.cell[:]), dtype=torch.get_default_dtype()))
            if bool(pbcs[-1].any()) and abs(float(np.linalg.det(cells[-1].numpy()))) < 1e-9:
                raise DataError(f"structure {i} is periodic (pbc={atoms.pbc.tolist()}) but its cell has no volume; "
                                "set atoms.cell or atoms.pbc = False")
            for key in targets:
                value, atomwise = _frame_property(atoms, key, i)
                if atomwise:
                    per_atom.add(key)
                targets[key].append(torch.as_tensor(np.asarray(value, dtype=float), dtype=torch.get_default_dtype()))
        n_atoms = torch.tensor([len(z) for z in zs], dtype=torch.long)
        for key, values in targets.items():
            stacked = torch.cat(values) if key in per_atom else torch.stack(values)
            targets[key] = stacked
        return cls(
            z=torch.cat(zs),
            pos=torch.cat(poss),
            batch=torch.repeat_interleave(torch.arange(len(zs)), n_atoms),
            n_atoms=n_atoms,
            targets=targets,
            per_atom=frozenset(per_atom),
            cell=torch.stack(cells) if any(bool(p.any()) for p in pbcs) else None,
            pbc=torch.stack(pbcs) if any(bool(p.any()) for p in pbcs) else None,
        )


def _frame_property(atoms, key: str, index: int):
    """Value of ``key`` in one ASE frame and whether it is per-atom."""
    if key in atoms.arrays:
        return atoms.arrays[key], True
    if key in atoms.info:
        return atoms.info[key], False
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        value = np.asarray(calc.results[key])
        return value, is_per_atom_result(key, value, len(atoms))
    raise DataError(
        f"structure {index} has no property {key!r} (looked in arrays, info and calculator results); "
        f"available: {sorted(set(atoms.arrays) | set(atoms.info))}"
    )


def ase_output_is_per_atom(name: str) -> bool | None:
    """Whether ASE's table of calculator outputs lists ``name`` as per atom; None if ASE does not know it.

    (``polarization`` of a 3-atom molecule is per molecule, ``energies`` per atom.)
    """
    from ase.outputs import ArrayProperty, all_outputs

    known = all_outputs.get(name)
    if known is None:
        return None
    return isinstance(known, ArrayProperty) and known.shapespec[:1] == ("natoms",)


def is_per_atom_result(name: str, value: np.ndarray, n_atoms: int) -> bool:
    """Whether calculator result ``name`` holds one row per atom: ASE decides for the names it
    knows, other names are per atom when their leading dimension is the number of atoms."""
    known = ase_output_is_per_atom(name)
    if known is not None:
        return known
    return value.ndim >= 1 and value.shape[0] == n_atoms
