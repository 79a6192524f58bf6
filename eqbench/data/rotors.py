"""Split protocols of the rotor benchmarks (PaiNN §5.3.2 ferrocene; So3krates §4 cumulene).

Both are random splits of the candidate indices they are given; selecting chain lengths is the
DataModule's ``subset={"n_carbon": [...]}``, applied before the protocol sees the candidates.
Sizes are keyword arguments so that CPU-scale runs can ask for fewer.
"""

from __future__ import annotations

import numpy as np

from eqbench.data.splits import Size, random_split, register_protocol


@register_protocol("ferrocene")
def ferrocene_split(candidates: np.ndarray, seed: int, train: Size = 10_000, val: Size = 1_000, test: Size = None):
    """PaiNN §5.3.2: "trained on energies of 10k structures ... another 1k structures are used for
    validation"; the rest is the test set."""
    return random_split(candidates, seed, train, val, test)


@register_protocol("cumulene")
def cumulene_split(candidates: np.ndarray, seed: int, train: Size = 1_000, val: Size = 100, test: Size = None):
    """So3krates §4 does not state its cumulene split sizes; eqbench uses 1,000 train + 100 validation
    per selection (e.g. one chain length), the rest test. ``eqbench data generate cumulene``
    makes 1,200 structures per chain length by default, so that every length fits alone."""
    return random_split(candidates, seed, train, val, test)
