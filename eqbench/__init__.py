"""eqbench: train, compare and ablate equivariant molecular neural networks."""

__version__ = "0.1.0"

from eqbench.errors import EqbenchError  # noqa: E402

__all__ = ["__version__", "EqbenchError", "AtomisticModel", "Batch"]


def __getattr__(name):
    # Lazy so that `import eqbench` (e.g. for the CLI's --help) does not import torch models eagerly.
    if name == "AtomisticModel":
        from eqbench.models.base import AtomisticModel

        return AtomisticModel
    if name == "Batch":
        from eqbench.batch import Batch

        return Batch
    raise AttributeError(name)
