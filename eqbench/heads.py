"""Output heads: map atom features to predictions.

Each head returns a dict of named outputs. Standardisation lives in the heads (buffers
``scale``, ``shift`` and per-element ``atomref``, set from the training split by the
task), so a saved model predicts in the dataset's units.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eqbench.batch import Batch
from eqbench.data.dataset import MAX_Z
from eqbench.errors import ConfigError
from eqbench.models.base import AtomFeatures
from eqbench.nn import build_mlp, segment_mean, segment_sum
from eqbench.nn.gated import gated_equivariant_mlp


class Atomwise(nn.Module):
    """y = agg_i (scale · MLP(s_i) + shift + atomref[z_i]); ``aggregation`` sum (extensive) or mean (intensive).

    The MLP has two layers, F → F/2 → 1, as in SchNet's and PaiNN's (Fig. 2) output blocks; ``n_hidden=[]``
    makes it one linear layer (DimeNet's final output layers), ``bias=False`` drops its last bias.
    """

    needs_pos_grad = False

    def __init__(self, n_features: int, output: str = "y", aggregation: str = "sum",
                 n_hidden: int | list[int] | None = None, activation: str = "silu", bias: bool = True):
        super().__init__()
        if aggregation not in ("sum", "mean"):
            raise ConfigError(f"head {output!r}: aggregation must be 'sum' or 'mean', not {aggregation!r}")
        self.output, self.aggregation = output, aggregation
        self.mlp = build_mlp(n_features, n_features // 2 if n_hidden is None else n_hidden, 1, activation,
                             bias_out=bias)
        # float64: the network works in float32, but a molecule's total (ferrocene: −23,865 kcal/mol, where
        # one float32 step is 0.002 kcal/mol) must still resolve a 0.01 kcal/mol rotor profile.
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("shift", torch.zeros((), dtype=torch.float64))
        self.register_buffer("atomref", torch.zeros(MAX_Z + 1, dtype=torch.float64))

    def set_standardization(self, scale: float, shift: float, atomref: torch.Tensor | None = None) -> None:
        self.scale.fill_(scale)
        self.shift.fill_(shift)
        if atomref is not None:
            self.atomref.copy_(torch.as_tensor(atomref, dtype=self.atomref.dtype)[: MAX_Z + 1])

    def atomic(self, batch: Batch, features: AtomFeatures) -> torch.Tensor:
        y = self.mlp(features.scalar).squeeze(-1).to(self.shift.dtype) * self.scale + self.shift
        return y + self.atomref[batch.z]

    def forward(self, batch: Batch, features: AtomFeatures) -> dict[str, torch.Tensor]:
        reduce = segment_sum if self.aggregation == "sum" else segment_mean
        return {self.output: reduce(self.atomic(batch, features), batch.batch, batch.n_molecules)}


class Energy(Atomwise):
    """Energy as a sum of atomic contributions; forces F = −∂E/∂pos by autograd.

    The graph is kept (``create_graph``) while training so that a force loss can be
    differentiated with respect to the weights.
    """

    def __init__(self, n_features: int, forces: bool = True, n_hidden: int | list[int] | None = None,
                 activation: str = "silu", output: str = "energy", bias: bool = True):
        super().__init__(n_features, output=output, aggregation="sum", n_hidden=n_hidden, activation=activation,
                         bias=bias)
        self.forces = forces

    @property
    def needs_pos_grad(self) -> bool:  # type: ignore[override]
        return self.forces

    def forward(self, batch: Batch, features: AtomFeatures) -> dict[str, torch.Tensor]:
        out = super().forward(batch, features)
        if self.forces:
            (grad,) = torch.autograd.grad(out[self.output].sum(), features.pos, create_graph=self.training)
            out["forces"] = -grad
        return out


# Heads selected by name in a Target's ``head`` (tensorial heads register here):
# each is called as HEADS[name](representation, output=..., **head_kwargs).
HEADS: dict[str, type[nn.Module]] = {}


# ---------------------------------------------------------------------------------------------------------
# Tensorial heads (PaiNN §4.2): dipole moment (Eqs. 12–13), its magnitude, polarizability (Eq. 14), ⟨R²⟩.
# Positions enter relative to each molecule's centre of mass, so outputs do not depend on where the
# molecule sits; total charges come from ``batch.targets["total_charge"]`` (0 when absent).

REFERENCE_POINTS = ("center_of_mass", "origin")


def _atomic_masses() -> torch.Tensor:
    from ase.data import atomic_masses

    masses = torch.ones(MAX_Z + 1)
    n = min(len(atomic_masses), MAX_Z + 1)
    masses[:n] = torch.as_tensor(atomic_masses[:n], dtype=masses.dtype)
    return masses


def require_vector_features(head: str, output: str, representation, hint: str = "") -> None:
    """Refuse a representation without vector features for a head that needs them."""
    if not getattr(representation, "has_vectors", False):
        raise ConfigError(
            f"head {head!r} (target {output!r}) needs vector features, but the model "
            f"{type(representation).__name__} has none (has_vectors=False); use an equivariant model such as "
            f"painn with vector_features: true{hint}")


class _MoleculeFrame(nn.Module):
    """Positions relative to each molecule's centre of mass (ase.data.atomic_masses)."""

    def __init__(self, reference_point: str = "center_of_mass", head: str = "?"):
        super().__init__()
        if reference_point not in REFERENCE_POINTS:
            raise ConfigError(f"head {head!r}: reference_point must be one of {REFERENCE_POINTS}, "
                              f"not {reference_point!r}")
        self.reference_point = reference_point
        self.register_buffer("masses", _atomic_masses(), persistent=False)

    def forward(self, batch: Batch, pos: torch.Tensor) -> torch.Tensor:
        if self.reference_point == "origin":
            return pos
        m = self.masses.to(pos.dtype)[batch.z]
        total = segment_sum(m, batch.batch, batch.n_molecules)
        com = segment_sum(m[:, None] * pos, batch.batch, batch.n_molecules) / total[:, None]
        return pos - com[batch.batch]


def _positions(batch: Batch, features: AtomFeatures) -> torch.Tensor:
    # features.pos carries the gradient graph when the model differentiates with respect to positions.
    return features.pos if features.pos is not None else batch.pos


def total_charge(batch: Batch, dtype: torch.dtype) -> torch.Tensor:
    """[B] net charge of each molecule: ``batch.targets["total_charge"]``, 0 when absent."""
    q = batch.targets.get("total_charge")
    if q is None:
        return torch.zeros(batch.n_molecules, dtype=dtype, device=batch.pos.device)
    return q.to(dtype=dtype, device=batch.pos.device).reshape(batch.n_molecules)


class _ScalarsAndVectors(nn.Module):
    """Atomwise scalar [N] (and vector [N, 3]) outputs of a head's output network.

    With vectors: two gated equivariant blocks F → F/2 → 1 (PaiNN Fig. 3, §5.4); scalars only:
    the two-layer atomwise MLP F → F/2 → 1 (Fig. 2).
    """

    def __init__(self, n_features: int, activation: str, vectors: bool):
        super().__init__()
        self.vectors = vectors
        if vectors:
            self.blocks = gated_equivariant_mlp(n_features, 1, activation)
        else:
            self.mlp = build_mlp(n_features, n_features // 2, 1, activation)

    def forward(self, features: AtomFeatures) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.vectors:
            return self.mlp(features.scalar).squeeze(-1), None
        s, v = features.scalar, features.vector
        for block in self.blocks:
            s, v = block(s, v)
        return s.squeeze(-1), v.squeeze(-1)


class _LatentHead(nn.Module):
    """Shared setup of the tensorial heads: an output name, the latent output network (gated
    equivariant blocks when ``vectors``) and positions in the molecule's frame."""

    needs_pos_grad = False
    head_name = "?"

    def __init__(self, representation, output: str, vectors: bool, reference_point: str):
        super().__init__()
        self.output = output
        act = getattr(representation, "activation", "silu")
        self.net = _ScalarsAndVectors(representation.n_features, act, vectors=vectors)
        self.frame = _MoleculeFrame(reference_point, self.head_name)

    def positions(self, batch: Batch, features: AtomFeatures) -> torch.Tensor:
        return self.frame(batch, _positions(batch, features))


class DipoleMoment(_LatentHead):
    """Molecular dipole vector μ [B, 3] from latent charges (Eq. 12) or charges and atomic dipoles (Eq. 13).

    μ = Σ_i μ_atom(v_i) + q_i (r_i − R),  R the centre of mass (``reference_point="origin"``: R = 0).
    The latent charges are shifted equally within each molecule so that they sum to its total
    charge, Σ_i q_i = Q; for a charged molecule μ then depends on R, and μ(R = 0) moves by Q·t when
    the molecule is translated by t.
    """

    head_name = "dipole"

    def __init__(self, representation, output: str = "dipole", atomic_dipoles: bool | None = True,
                 reference_point: str = "center_of_mass"):
        if atomic_dipoles is None:  # Eq. 13 when the model has vector features, else Eq. 12
            atomic_dipoles = bool(getattr(representation, "has_vectors", False))
        if atomic_dipoles:
            require_vector_features(self.head_name, output, representation,
                                    "; or set head_kwargs atomic_dipoles: false (latent charges only, Eq. 12)")
        super().__init__(representation, output, atomic_dipoles, reference_point)
        self.atomic_dipoles = atomic_dipoles

    def dipole(self, batch: Batch, features: AtomFeatures) -> torch.Tensor:
        q, mu_atom = self.net(features)
        n = batch.n_atoms.to(q.dtype)
        excess = segment_sum(q, batch.batch, batch.n_molecules) - total_charge(batch, q.dtype)
        q = q - (excess / n)[batch.batch]
        r = self.positions(batch, features)
        mu = q[:, None] * r
        if mu_atom is not None:
            mu = mu + mu_atom
        return segment_sum(mu, batch.batch, batch.n_molecules)

    def forward(self, batch: Batch, features: AtomFeatures) -> dict[str, torch.Tensor]:
        return {self.output: self.dipole(batch, features)}


class DipoleMagnitude(DipoleMoment):
    """|μ| [B] (QM9's μ), μ from Eq. 13 (PaiNN §5.1) or, with ``atomic_dipoles=False``, Eq. 12
    (``atomic_dipoles=None``: Eq. 13 for a model with vector features, Eq. 12 for an invariant one)."""

    head_name = "dipole_magnitude"

    def __init__(self, representation, output: str = "mu", atomic_dipoles: bool | None = True,
                 reference_point: str = "center_of_mass"):
        super().__init__(representation, output, atomic_dipoles, reference_point)

    def forward(self, batch: Batch, features: AtomFeatures) -> dict[str, torch.Tensor]:
        return {self.output: torch.linalg.vector_norm(self.dipole(batch, features), dim=-1)}


class Polarizability(_LatentHead):
    """Polarizability tensor α [B, 3, 3] (Eq. 14), symmetric by construction.

    α = Σ_i α₀(s_i) I₃ + ν(v_i) ⊗ r_i + r_i ⊗ ν(v_i), with α₀ and ν the scalar and vector outputs of
    two gated equivariant blocks and r_i relative to the centre of mass.

    ``isotropic=True`` outputs the isotropic polarizability tr(α)/3 [B] instead (QM9's ``alpha``;
    ``alpha_tensor`` is the full tensor). ``vectors=None`` (with ``isotropic``) lets an invariant model
    use the head too: without vector features Eq. 14 keeps only its Σ_i α₀(s_i) I₃ term, whose trace/3
    is an atomwise sum of the two-layer MLP's outputs.
    """

    head_name = "polarizability"

    def __init__(self, representation, output: str = "polarizability", reference_point: str = "center_of_mass",
                 isotropic: bool = False, vectors: bool | None = True):
        if vectors is None:
            vectors = bool(getattr(representation, "has_vectors", False))
        if vectors:
            require_vector_features(self.head_name, output, representation,
                                    "; or set head_kwargs isotropic: true, vectors: null (Σ α₀ only)")
        elif not isotropic:
            raise ConfigError(f"head 'polarizability' (target {output!r}) without vector features predicts only the "
                              f"isotropic part of Eq. 14; set head_kwargs isotropic: true")
        super().__init__(representation, output, vectors, reference_point)
        self.isotropic = isotropic
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("shift", torch.zeros((), dtype=torch.float64))

    def standardize(self, train) -> None:
        """α₀ = scale · MLP(s_i) + shift and ν = scale · ν(v_i), with shift and scale the mean and standard
        deviation of the isotropic polarizability per atom, tr(α)/(3n), over the training molecules (like
        the atomwise heads' standardisation; it leaves the form of Eq. 14 unchanged)."""
        if self.output not in train.properties:
            return
        y = np.asarray(train.properties[self.output].values, dtype=np.float64)
        if y.ndim == 3:
            y = np.trace(y, axis1=-2, axis2=-1) / 3
        per_atom = y.reshape(len(train)) / train.n_atoms
        std = float(per_atom.std())
        self.scale.fill_(std if std > 0 and np.isfinite(std) else 1.0)
        self.shift.fill_(float(per_atom.mean()))

    def tensor(self, batch: Batch, features: AtomFeatures) -> torch.Tensor:
        alpha0, nu = self.net(features)
        alpha0 = alpha0 * self.scale.to(alpha0.dtype) + self.shift.to(alpha0.dtype)
        if nu is not None:
            nu = nu * self.scale.to(nu.dtype)
        eye = torch.eye(3, dtype=alpha0.dtype, device=alpha0.device)
        atomic = alpha0[:, None, None] * eye
        if nu is not None:
            r = self.positions(batch, features)
            anisotropic = nu[:, :, None] * r[:, None, :]
            atomic = atomic + anisotropic + anisotropic.transpose(1, 2)
        return segment_sum(atomic, batch.batch, batch.n_molecules)

    def forward(self, batch: Batch, features: AtomFeatures) -> dict[str, torch.Tensor]:
        alpha = self.tensor(batch, features)
        if self.isotropic:
            return {self.output: torch.diagonal(alpha, dim1=-2, dim2=-1).sum(-1) / 3}
        return {self.output: alpha}


class ElectronicSpatialExtent(_LatentHead):
    """⟨R²⟩ [B] = Σ_i q_atom(s_i) ‖r_i − R‖² (PaiNN §5.1), R the centre of mass.

    The latent q_i weight the electron density, whose integral is the electron count rather than the
    net charge, so unlike the dipole's charges they are not constrained to sum to anything.
    """

    head_name = "r2"

    def __init__(self, representation, output: str = "r2", reference_point: str = "center_of_mass"):
        super().__init__(representation, output, False, reference_point)

    def forward(self, batch: Batch, features: AtomFeatures) -> dict[str, torch.Tensor]:
        q, _ = self.net(features)
        r = self.positions(batch, features)
        return {self.output: segment_sum(q * r.pow(2).sum(-1), batch.batch, batch.n_molecules)}


HEADS.update({"dipole": DipoleMoment, "dipole_magnitude": DipoleMagnitude, "polarizability": Polarizability,
              "r2": ElectronicSpatialExtent})
