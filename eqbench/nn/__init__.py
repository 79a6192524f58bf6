"""Building blocks shared by the models."""

from eqbench.nn.activations import ShiftedSoftplus, activation
from eqbench.nn.cutoff import CosineCutoff, PolynomialEnvelope
from eqbench.nn.mlp import build_mlp
from eqbench.nn.radial import BesselRBF, CosineSquaredRBF, GaussianRBF, SincRBF, radial_basis
from eqbench.nn.scatter import segment_mean, segment_sum

__all__ = ["ShiftedSoftplus", "activation", "CosineCutoff", "PolynomialEnvelope", "build_mlp", "BesselRBF",
           "CosineSquaredRBF", "GaussianRBF", "SincRBF", "radial_basis", "segment_mean", "segment_sum"]
