"""A small dataset with a known physical law: Morse pair energies and their exact forces.

Used where a test needs data a model can learn quickly; the rotor sets are real xTB data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eqbench.data.cache import write_cache
from eqbench.data.dataset import AtomisticDataset


def morse_energy(pos: torch.Tensor, r0: float = 1.5, a: float = 1.2, depth: float = 1.0) -> torch.Tensor:
    d = torch.cdist(pos, pos)
    iu = torch.triu_indices(len(pos), len(pos), 1)
    r = d[iu[0], iu[1]]
    return (depth * (1 - torch.exp(-a * (r - r0))) ** 2).sum()


def toy_dataset(n_molecules: int = 300, seed: int = 0) -> AtomisticDataset:
    rng = np.random.default_rng(seed)
    numbers, positions, energies, forces = [], [], [], []
    for _ in range(n_molecules):
        n = int(rng.integers(3, 7))
        pos = []
        while len(pos) < n:
            p = rng.normal(size=3) * 1.3
            if all(np.linalg.norm(p - q) > 1.0 for q in pos):
                pos.append(p)
        pos_t = torch.tensor(np.array(pos), requires_grad=True)
        e = morse_energy(pos_t)
        (g,) = torch.autograd.grad(e, pos_t)
        numbers.append(rng.choice([1, 6, 8], size=n))
        positions.append(np.array(pos))
        energies.append(float(e.detach()))
        forces.append(-g.numpy())
    return AtomisticDataset.from_molecules(numbers, positions, {"energy": energies, "forces": forces},
                                           {"energy": "eV", "forces": "eV/Å"}, per_atom=["forces"],
                                           metadata={"name": "toy-morse"})


def toy_cache(directory: Path, n_molecules: int = 300, seed: int = 0) -> Path:
    path = Path(directory) / "toy.h5"
    write_cache(toy_dataset(n_molecules, seed), path)
    return path
