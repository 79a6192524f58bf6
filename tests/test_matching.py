"""Parameter matching (eqbench.sweep.matching): PaiNN Tab. 4 widths, generic use, errors."""

import pytest
import torch

from eqbench.errors import ConfigError, ModelError
from eqbench.heads import Energy
from eqbench.models import count_parameters, create
from eqbench.sweep import count_model_parameters, match_width, width_for_budget

PAPER_BASE = 588_300  # Tab. 4, "no ablation"
TAB4 = {  # ablation: the paper's matched width F
    "no_scalar_product": ({"vector_scalar_product": False}, 134),
    "no_vector_propagation": ({"vector_propagation": False}, 135),
    "no_both": ({"vector_scalar_product": False, "vector_propagation": False}, 142),
    "invariant": ({"vector_features": False}, 174),
}


def built_count(model, **kwargs):
    """Parameters of a really built (not meta) representation plus the task's energy head."""
    rep = create(model, **kwargs)
    return count_parameters(rep) + count_parameters(Energy(rep.n_features, activation=rep.activation))


def test_meta_count_equals_built_count():
    for kwargs in ({}, {"n_features": 37, "vector_propagation": False}, {"vector_features": False}):
        assert count_model_parameters("painn", kwargs) == built_count("painn", **kwargs)
    assert count_model_parameters("schnet", {"n_features": 50}) == built_count("schnet", n_features=50)


def test_full_painn_with_head_within_one_percent_of_paper():
    n = count_model_parameters("painn")
    assert abs(n - PAPER_BASE) / PAPER_BASE < 0.01


@pytest.mark.parametrize("name", TAB4)
def test_painn_ablations_matched_within_one_percent(name):
    ablation, paper_width = TAB4[name]
    result = match_width("painn", {}, ablation)
    assert result.base_n_params == count_model_parameters("painn")
    assert result.n_params == built_count("painn", n_features=result.width, **ablation)
    assert abs(result.relative_difference) < 0.01
    # closest: no neighbouring width is nearer to the base count
    for w in (result.width - 1, result.width + 1):
        other = count_model_parameters("painn", {**ablation, "n_features": w})
        assert abs(other - result.base_n_params) >= abs(result.n_params - result.base_n_params)
    # O(log width) counts, not a scan
    assert result.evaluations <= 20
    if name != "invariant":
        assert result.width == paper_width  # Tab. 4
    else:
        # Removing every vector computation leaves ~409k parameters at the paper's F = 174; matching
        # the 589k base needs a wider invariant model (see the report in eqbench/models/painn.py).
        assert result.width > paper_width


def test_generic_for_another_model_and_width_key():
    # SchNet with 3 instead of 6 interactions, widened to the 6-interaction count.
    result = match_width("schnet", {"n_features": 64}, {"n_interactions": 3})
    assert result.width > 64 and abs(result.relative_difference) < 0.01
    # A different keyword as the width: the number of radial basis functions of PaiNN.
    rbf = match_width("painn", {"n_features": 32}, {"vector_propagation": False}, key="n_rbf")
    assert rbf.key == "n_rbf" and rbf.width > 20
    # widths restricted to multiples of a step
    stepped = match_width("painn", {}, {"vector_features": False}, step=8)
    assert stepped.width % 8 == 0
    for w in (stepped.width - 8, stepped.width + 8):
        other = count_model_parameters("painn", {"vector_features": False, "n_features": w})
        assert abs(other - stepped.base_n_params) > abs(stepped.n_params - stepped.base_n_params)


def test_budget_smaller_than_default_width_searches_downwards():
    target = count_model_parameters("painn", {"n_features": 20})
    result = width_for_budget("painn", {}, target)
    assert result.width == 20 and result.n_params == target


def test_unknown_width_key_names_the_key():
    with pytest.raises(ConfigError, match="'n_hidden'"):
        match_width("painn", {}, {"vector_features": False}, key="n_hidden")


def test_unknown_model_is_a_model_error():
    with pytest.raises(ModelError, match="painnn"):
        match_width("painnn", {}, {})


def test_unreachable_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="max_width"):
        width_for_budget("painn", {}, 10**12, max_width=256)


def test_counting_allocates_no_weights():
    # A PaiNN with F = 4096 has ~340M parameters; on the meta device counting it is instant and costs no memory.
    n = count_model_parameters("painn", {"n_features": 4096})
    F = 4096
    assert n > 20 * F * F
    assert torch.empty(0).device.type == "cpu"  # the meta device context does not leak
