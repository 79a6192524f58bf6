"""Datasets, the HDF5 cache, splits and DataModules."""

from eqbench.data import rotors  # noqa: E402,F401  (registers the ferrocene and cumulene split protocols)
from eqbench.data.cache import read_cache, write_cache
from eqbench.data.dataset import AtomisticDataset, Property
from eqbench.data.readers import BUNDLED, read
from eqbench.data.splits import PROTOCOLS, Split, make_split, register_protocol

__all__ = ["AtomisticDataset", "Property", "read", "read_cache", "write_cache", "BUNDLED", "PROTOCOLS", "Split",
           "make_split", "register_protocol"]
