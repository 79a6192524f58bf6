"""Parameter matching: the width at which a model variant has as many parameters as a reference.

An ablation removes parameters; to compare at equal capacity (PaiNN Tab. 4) the ablated model is
widened until its parameter count — representation plus the heads the task would build for the
targets (by default the standard energy head) — is closest to the base model's.

Counting is cheap: models are built on PyTorch's ``meta`` device, which records shapes without
allocating or initialising weights, and parameter counts grow monotonically with width, so a
bracket (doubling) plus bisection needs O(log width) builds.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from eqbench.errors import ConfigError, ModelError
from eqbench.models import MODELS, count_parameters, create

DEFAULT_WIDTH_KEY = "n_features"


@dataclass(frozen=True)
class MatchResult:
    key: str  # the keyword argument that was varied
    width: int  # its matched value
    n_params: int  # parameters of the matched variant
    base_n_params: int  # parameters of the reference
    evaluations: int  # parameter counts computed during the search

    @property
    def relative_difference(self) -> float:
        return (self.n_params - self.base_n_params) / self.base_n_params


def count_model_parameters(model: str, kwargs: dict | None = None, targets=None) -> int:
    """Parameters of representation ``model(**kwargs)`` plus the heads the task builds for ``targets``.

    ``targets`` are :class:`eqbench.task.Target` objects or dicts (default: energy only, i.e. the
    standard two-layer atomwise energy head).
    """
    from eqbench.task import Target, build_heads

    targets = [Target(**t) if isinstance(t, dict) else t for t in (targets or [Target("energy")])]
    kwargs = dict(kwargs or {})
    try:
        # Shapes only: no memory, no weight initialisation.
        with torch.device("meta"):
            return _count(create(model, **kwargs), targets, build_heads)
    except (NotImplementedError, RuntimeError):
        # A module that computes values while it is built (e.g. tabulated coefficients) may not run on
        # the meta device; building it for real gives the same count.
        return _count(create(model, **kwargs), targets, build_heads)


def _count(representation, targets, build_heads) -> int:
    heads = build_heads(representation, targets)
    return count_parameters(representation) + sum(count_parameters(h) for h in heads)


def default_width(model: str, key: str) -> int | None:
    """The default of keyword ``key`` of model ``model``; ConfigError if the model has no such keyword."""
    try:
        cls = MODELS[model.lower()]
    except KeyError:
        raise ModelError(f"parameter matching: unknown model {model!r}; choose one of {sorted(MODELS)}") from None
    params = inspect.signature(cls.__init__).parameters
    if key not in params:
        widths = [k for k, p in params.items() if isinstance(p.default, int) and not isinstance(p.default, bool)]
        raise ConfigError(f"parameter matching: model {model!r} has no keyword {key!r} to vary; "
                          f"choose one of its integer keywords {widths}")
    default = params[key].default
    return default if isinstance(default, int) else None


def width_for_budget(model: str, kwargs: dict | None, n_params: int, key: str = DEFAULT_WIDTH_KEY,
                     targets=None, step: int = 1, max_width: int = 1 << 16, base_n_params: int | None = None
                     ) -> MatchResult:
    """The multiple of ``step`` for keyword ``key`` whose parameter count is closest to ``n_params``."""
    kwargs = dict(kwargs or {})
    start = kwargs.get(key, default_width(model, key)) or step
    cache: dict[int, int] = {}

    def count(width: int) -> int:
        if width not in cache:
            cache[width] = count_model_parameters(model, {**kwargs, key: width}, targets)
        return cache[width]

    # Bracket: lo has fewer parameters than the budget (or is the smallest width), hi at least as many.
    start = max(step, start // step * step)
    lo = hi = start
    if count(start) >= n_params:
        while lo > step and count(lo) >= n_params:
            lo = max(step, lo // 2 // step * step)
    else:
        while count(hi) < n_params:
            if hi >= max_width:
                raise ConfigError(f"parameter matching: {model} with {key}={hi} has {count(hi):,} parameters, "
                                  f"still fewer than {n_params:,}; raise max_width or check {key!r} sets the width")
            lo, hi = hi, min(2 * hi, max_width // step * step)
            if count(hi) <= count(lo) and count(hi) < n_params:
                raise ConfigError(f"parameter matching: the parameter count of {model} does not grow with "
                                  f"{key!r}; name the keyword that sets the model's width")
    # Bisection: the smallest width with at least n_params lies in (lo, hi].
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if count(mid) >= n_params:
            hi = mid
        else:
            lo = mid
    best = min((w for w in (lo, hi) if w >= step), key=lambda w: (abs(count(w) - n_params), w))
    return MatchResult(key=key, width=best, n_params=count(best),
                       base_n_params=n_params if base_n_params is None else base_n_params, evaluations=len(cache))


def match_width(model: str, base_kwargs: dict | None = None, ablation_kwargs: dict | None = None,
                key: str = DEFAULT_WIDTH_KEY, targets=None, step: int = 1, max_width: int = 1 << 16) -> MatchResult:
    """Width of ``model(**base_kwargs, **ablation_kwargs)`` with the parameter count closest to the base model's.

    Example (PaiNN Tab. 4): ``match_width("painn", {}, {"vector_propagation": False})`` → width 135.
    """
    base_kwargs = dict(base_kwargs or {})
    default = default_width(model, key)  # checks model and key before any counting
    base = count_model_parameters(model, base_kwargs, targets)
    variant = {**base_kwargs, **(ablation_kwargs or {})}
    variant.setdefault(key, base_kwargs.get(key, default))
    return width_for_budget(model, variant, base, key, targets, step, max_width)
