"""Model registry: ``create(name, **kwargs)`` builds a representation by name."""

from __future__ import annotations

from torch import nn

from eqbench.errors import ModelError
from eqbench.models.base import AtomFeatures, AtomisticModel, Representation
from eqbench.models.dimenet import DimeNet, DimeNetPlusPlus
from eqbench.models.e3nn_nets import E3nnNet, L0Net, L0NetDeep, L1Net
from eqbench.models.painn import PaiNN
from eqbench.models.schnet import SchNet
from eqbench.models.so3krates import So3krates

MODELS: dict[str, type[Representation]] = {"schnet": SchNet}
MODELS["painn"] = PaiNN
MODELS.update({"e3nn": E3nnNet, "l1net": L1Net, "l0net": L0Net, "l0net_deep": L0NetDeep})
MODELS["so3krates"] = So3krates
MODELS["dimenet"] = DimeNet
MODELS["dimenet++"] = DimeNetPlusPlus


def register(name: str):
    def deco(cls):
        MODELS[name] = cls
        return cls

    return deco


def create(name: str, **kwargs) -> Representation:
    """The representation called ``name`` (``schnet``, ``painn``, ...) with keyword hyperparameters."""
    try:
        cls = MODELS[name.lower()]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ModelError(f"model {name!r}: {err}") from err


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MODELS", "create", "register", "count_parameters", "AtomisticModel", "AtomFeatures", "Representation",
           "SchNet", "PaiNN", "DimeNet", "DimeNetPlusPlus", "E3nnNet", "L1Net", "L0Net", "L0NetDeep", "So3krates"]
