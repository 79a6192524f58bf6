"""Batch assembly speed: QM9-size molecules per second from an eqbench cache, through the DataLoader
the training DataModule uses (shuffled indices of a subset, ``__getitems__`` gathers each batch)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from eqbench.bench.structures import qm9_like_molecule


def batch_assembly(n_molecules: int = 130_831, batch_size: int = 100, seconds: float = 3.0, seed: int = 0) -> dict:
    """Molecules per second gathered into Batches from a cache of ``n_molecules`` (QM9's count) molecules."""
    from eqbench.data import read, write_cache
    from eqbench.data.datamodule import _identity
    from eqbench.data.dataset import AtomisticDataset

    rng = np.random.default_rng(seed)
    unique = [qm9_like_molecule(rng) for _ in range(500)]
    mols = [unique[i % len(unique)] for i in range(n_molecules)]
    energy = rng.normal(size=n_molecules)
    ds = AtomisticDataset.from_molecules([m[0] for m in mols], [m[1] for m in mols],
                                         properties={"U0": energy}, units={"U0": "meV"}, validate=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "qm9like.h5"
        write_cache(ds, path, compression=None)
        cached = read(str(path))
        train = Subset(cached, rng.permutation(n_molecules)[: int(0.85 * n_molecules)].tolist())
        loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=_identity,
                            generator=torch.Generator().manual_seed(seed))
        next(iter(loader))  # first batch converts the arrays to tensors once
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for batch in loader:
                count += batch.n_molecules
                if time.perf_counter() - t0 >= seconds:
                    break
        dt = time.perf_counter() - t0
    return {"molecules_per_s": count / dt, "molecules": count, "seconds": dt, "batch_size": batch_size,
            "description": f"cache of {n_molecules:,} molecules, shuffled DataLoader as in training, "
                           f"batches of {batch_size}, one process"}
