"""AtomisticModel = representation + heads.

A representation maps a Batch to :class:`AtomFeatures` (it builds its neighbour list from
positions inside the forward pass); heads map features to predictions. When a head
needs gradients with respect to positions (forces), the model enables them here, so
forces are exact derivatives of the predicted energy.

Hyperparameter ranges are checked for every representation by one mechanism, so a model
never has to write its own checks for the common vocabulary and a new model gets them by
subclassing :class:`Representation`:

- :data:`HYPERPARAMETER_RANGES` states the valid range of each common-vocabulary argument
  (``cutoff`` > 0 and finite, ``n_features``/``n_interactions``/``n_rbf`` integers ≥ 1,
  ``lmax`` an integer ≥ 0, ...). A model adds ranges for its own arguments in its class
  attribute ``hyperparameter_ranges``.
- Representation's metaclass checks the arguments of every construction, before the model's
  ``__init__`` runs: ``eqbench.models.create(name, ...)``, a direct call ``SchNet(...)``, and
  LightningCLI/jsonargparse, which builds ``class_path`` classes directly. A metaclass (not a
  wrapped ``__init__``) leaves each model's signature untouched, which jsonargparse reads to type
  the config keys. Arguments are bound to the signature with defaults applied, so a bad default
  is caught too; an argument the signature does not accept is left to Python's own TypeError.
- A value out of range raises :class:`~eqbench.errors.ModelError` naming the model, the argument
  and the valid range: a cutoff of 0 would otherwise train a graph without edges to the end.
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, replace

import torch
from torch import nn

from eqbench.batch import Batch
from eqbench.errors import ModelError


@dataclass(frozen=True)
class Range:
    """Valid values of one hyperparameter: an integer or a real number (never a bool), with bounds."""

    integer: bool
    minimum: float
    exclusive: bool = False  # minimum itself excluded (cutoff > 0)
    unit: str = ""

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(float(value)):
            return False
        return value > self.minimum if self.exclusive else value >= self.minimum

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        bound = f"{'>' if self.exclusive else '≥'} {self.minimum:g}"
        return f"{kind} {bound}" + (f" ({self.unit})" if self.unit else "")


COUNT = Range(integer=True, minimum=1)
HYPERPARAMETER_RANGES: dict[str, Range] = {
    "cutoff": Range(integer=False, minimum=0.0, exclusive=True, unit="Å"),
    "n_features": COUNT,
    "n_interactions": COUNT,
    "n_rbf": COUNT,
    "lmax": Range(integer=True, minimum=0),
    "max_z": COUNT,
    "n_spherical": COUNT,
    "n_bilinear": COUNT,
    "n_heads": COUNT,
}


def check_hyperparameters(cls: type, args: tuple, kwargs: dict) -> None:
    """Raise :class:`ModelError` when an argument of ``cls(*args, **kwargs)`` is out of its range."""
    ranges = {**HYPERPARAMETER_RANGES, **getattr(cls, "hyperparameter_ranges", {})}
    try:
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
    except TypeError:
        return  # the call itself raises Python's TypeError, with the offending name
    bound.apply_defaults()
    values = dict(bound.arguments)
    parameters = inspect.signature(cls.__init__).parameters
    for name, param in parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            values.update(values.pop(name, {}))
    for name, value in values.items():
        if value is None and name in parameters and parameters[name].default is None:
            continue  # an optional argument left unset (e.g. So3krates' lmax when degrees are given)
        valid = ranges.get(name)
        if valid is not None and not valid.accepts(value):
            raise ModelError(f"{cls.__name__}: {name}={value!r} is invalid; {name} must be {valid.describe()}")


class _CheckedConstruction(type(nn.Module)):
    """Checks the hyperparameters of every Representation subclass as it is constructed."""

    def __call__(cls, *args, **kwargs):
        check_hyperparameters(cls, args, kwargs)
        return super().__call__(*args, **kwargs)


@dataclass
class AtomFeatures:
    scalar: torch.Tensor  # [N, F] invariant features
    vector: torch.Tensor | None = None  # [N, 3, F] Cartesian vector features (equivariant models)
    pos: torch.Tensor | None = None  # positions the features were computed from (carry grad for forces)


class Representation(nn.Module, metaclass=_CheckedConstruction):
    """Base class: subclasses set ``n_features``, ``cutoff`` and ``has_vectors``.

    Constructor arguments named in :data:`HYPERPARAMETER_RANGES` (and in a subclass's
    ``hyperparameter_ranges``) are range-checked before ``__init__`` runs (module docstring).
    """

    hyperparameter_ranges: dict[str, Range] = {}
    n_features: int
    cutoff: float
    has_vectors: bool = False
    activation: str = "silu"
    # True when the model passes the batch's cell and pbc to the neighbour list (periodic images);
    # a model that does not is refused periodic input instead of silently ignoring the cell.
    supports_periodic: bool = False

    def forward(self, batch: Batch) -> AtomFeatures:  # pragma: no cover - interface
        raise NotImplementedError


class AtomisticModel(nn.Module):
    def __init__(self, representation: Representation, heads: list[nn.Module] | nn.ModuleList):
        super().__init__()
        self.representation = representation
        self.heads = nn.ModuleList(heads)

    @property
    def needs_pos_grad(self) -> bool:
        return any(getattr(h, "needs_pos_grad", False) for h in self.heads)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.needs_pos_grad:
            # Validation runs under no_grad; forces still need the graph from pos to energy.
            with torch.enable_grad():
                batch = replace(batch, pos=batch.pos.detach().requires_grad_(True))
                return self._forward(batch)
        return self._forward(batch)

    def _forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.pbc is not None and bool(batch.pbc.any()) and not self.representation.supports_periodic:
            raise ModelError(f"{type(self.representation).__name__} does not handle periodic cells (the batch has "
                             f"pbc set); use a model that does (SchNet, PaiNN) or set atoms.pbc = False")
        features = self.representation(batch)
        features.pos = batch.pos
        out: dict[str, torch.Tensor] = {}
        for head in self.heads:
            out.update(head(batch, features))
        return out
