"""Seeded structures to benchmark on: QM9-size molecules, and water clusters and boxes for scaling.

Everything here is synthetic and deterministic for a seed, so a benchmark needs no dataset and
two runs (or two machines) time exactly the same batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from eqbench.batch import Batch

# QM9: H, C, N, O, F; at most 9 heavy atoms, 18 atoms on average.
HEAVY = np.array([6, 7, 8, 9])
HEAVY_P = np.array([0.72, 0.12, 0.15, 0.01])
WATER_SPACING = (18.015 / 0.997 / 0.6022) ** (1 / 3)  # Å per molecule at 0.997 g/cm³ (3.10 Å)


def _place(rng, pos: list[np.ndarray], anchor: np.ndarray, bond: float, min_dist: float) -> np.ndarray:
    """A point at ``bond`` from ``anchor`` that keeps ``min_dist`` from every placed point."""
    for _ in range(200):
        d = rng.normal(size=3)
        p = anchor + bond * d / np.linalg.norm(d)
        if all(np.linalg.norm(p - q) >= min_dist for q in pos):
            return p
    return anchor + bond * 1.5 * rng.normal(size=3)  # crowded: step further out (still no overlap in practice)


def qm9_like_molecule(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(z, pos) of one QM9-size molecule: 6–9 heavy atoms bonded at 1.45 Å, hydrogens at 1.09 Å."""
    n_heavy = int(rng.choice([6, 7, 8, 9], p=[0.05, 0.1, 0.2, 0.65]))
    n_h = int(rng.integers(max(n_heavy - 4, 1), n_heavy + 7))
    pos = [np.zeros(3)]
    for _ in range(n_heavy - 1):
        pos.append(_place(rng, pos, pos[int(rng.integers(len(pos)))], 1.45, 1.3))
    for _ in range(n_h):
        pos.append(_place(rng, pos, pos[int(rng.integers(n_heavy))], 1.09, 1.0))
    z = np.concatenate([rng.choice(HEAVY, size=n_heavy, p=HEAVY_P), np.ones(n_h, dtype=np.int64)])
    return z.astype(np.int64), np.array(pos)


def qm9_like_batch(n_molecules: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> Batch:
    """A fixed batch of ``n_molecules`` QM9-size molecules with random energy and force targets.

    The first ``k`` molecules of a seed are the same for every ``n_molecules ≥ k``.
    """
    rng = np.random.default_rng(seed)
    zs, poss = zip(*(qm9_like_molecule(rng) for _ in range(n_molecules)))
    return _batch(zs, poss, dtype, seed)


def _batch(zs, poss, dtype, seed, cells=None) -> Batch:
    n_atoms = torch.tensor([len(z) for z in zs])
    gen = torch.Generator().manual_seed(seed)
    n = int(n_atoms.sum())
    targets = {"energy": torch.randn(len(zs), generator=gen, dtype=torch.float64),
               "forces": torch.randn(n, 3, generator=gen).to(dtype)}
    cell = pbc = None
    if cells is not None:
        cell = torch.tensor(np.stack(cells), dtype=dtype)
        pbc = torch.ones(len(zs), 3, dtype=torch.bool)
    return Batch(z=torch.as_tensor(np.concatenate(zs)), pos=torch.tensor(np.concatenate(poss), dtype=dtype),
                 batch=torch.repeat_interleave(torch.arange(len(zs)), n_atoms), n_atoms=n_atoms,
                 targets=targets, per_atom=frozenset({"forces"}), cell=cell, pbc=pbc)


def _water(rng, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One randomly oriented water molecule (O–H 0.9572 Å, H–O–H 104.52°) with its O at ``center``."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    rot = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                    [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
                    [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d]])
    half = math.radians(104.52) / 2
    local = np.array([[0, 0, 0], [0.9572 * math.sin(half), 0.9572 * math.cos(half), 0],
                      [-0.9572 * math.sin(half), 0.9572 * math.cos(half), 0]])
    return np.array([8, 1, 1]), center + local @ rot.T


def water_box(n_side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, pos, cell) of n_side³ water molecules on a jittered grid at liquid density, periodic cubic cell."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    zs, poss = [], []
    for g in grid:
        z, p = _water(rng, (g + 0.5 + rng.uniform(-0.05, 0.05, 3)) * WATER_SPACING)
        zs.append(z)
        poss.append(p)
    return np.concatenate(zs), np.concatenate(poss), np.eye(3) * n_side * WATER_SPACING


def water_cluster(n_atoms: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(z, pos) of the ⌈n_atoms/3⌉ water molecules of a liquid-density grid nearest to its centre."""
    n_mol = max(1, math.ceil(n_atoms / 3))
    n_side = math.ceil(n_mol ** (1 / 3)) + 2
    z, pos, cell = water_box(n_side, seed)
    oxygens = pos[0::3]
    order = np.argsort(np.linalg.norm(oxygens - cell.diagonal() / 2, axis=1), kind="stable")[:n_mol]
    keep = (order[:, None] * 3 + np.arange(3)).reshape(-1)
    return z[keep], pos[keep]


def water_batch(n_atoms: int, periodic: bool, seed: int = 0, dtype: torch.dtype = torch.float32) -> Batch:
    """One water structure of about ``n_atoms`` atoms: a cluster, or a periodic box (n_side³ molecules,
    n_side = round((n_atoms/3)^⅓), at least 2)."""
    if periodic:
        n_side = max(2, round((n_atoms / 3) ** (1 / 3)))
        z, pos, cell = water_box(n_side, seed)
        return _batch([z], [pos], dtype, seed, cells=[cell])
    z, pos = water_cluster(n_atoms, seed)
    return _batch([z], [pos], dtype, seed)
