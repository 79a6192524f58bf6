"""Sweeps: specs, orchestration, launchers and parameter matching.

``eqbench sweep`` imports this package for its arguments; the parameter-matching names below are
imported when first used, so that commands which never count parameters do not import torch.
"""

_MATCHING = ("MatchResult", "count_model_parameters", "match_width", "width_for_budget")
__all__ = list(_MATCHING)


def __getattr__(name: str):
    if name in _MATCHING:
        from eqbench.sweep import matching

        return getattr(matching, name)
    raise AttributeError(f"module 'eqbench.sweep' has no attribute {name!r}")
