"""Sweeps: specs, orchestration, launchers and parameter matching."""

from eqbench.sweep.matching import MatchResult, count_model_parameters, match_width, width_for_budget

__all__ = ["MatchResult", "count_model_parameters", "match_width", "width_for_budget"]
