"""Datasets, the HDF5 cache, splits and DataModules."""

# Importing these registers their split protocols (ferrocene, cumulene; qm9-*; md17-1k, rmd17-official*; qm7x-250*).
from eqbench.data import md17, qm7x, qm9, rotors  # noqa: E402,F401
from eqbench.data.cache import read_cache, write_cache
from eqbench.data.dataset import AtomisticDataset, Property
from eqbench.data.readers import BUNDLED, read
from eqbench.data.splits import PROTOCOLS, Split, make_split, register_protocol

__all__ = ["AtomisticDataset", "Property", "read", "read_cache", "write_cache", "BUNDLED", "PROTOCOLS", "Split",
           "make_split", "register_protocol"]
