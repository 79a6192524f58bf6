"""Checks every model and head must pass (used by each model's tests).

- rotation/translation/permutation: energies invariant, forces (and vector outputs) rotate;
- forces equal central finite differences of the energy (float64);
- energy and forces continuous as a neighbour crosses the cutoff.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from eqbench.batch import Batch


@contextlib.contextmanager
def default_float64():
    """Build models in float64, so that buffers computed at construction (basis frequencies nπ/r_cut, Gaussian
    centres) are float64 too; a float32 model converted with ``.double()`` keeps their float32 rounding (~1e-7)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def reference_batch() -> Batch:
    """The loop-reference tests' float64 batch: two molecules (5 and 3 atoms). In the first, atoms 0–4 (3.59 Å)
    and 3–4 (4.33 Å) are beyond a 3 Å cutoff and atoms 2–4 (2.86 Å) just inside it, so the cutoff and the pair
    selection matter."""
    pos = torch.tensor([
        [0.00, 0.00, 0.00], [1.10, 0.20, -0.10], [0.70, 1.30, 0.40], [-0.60, 0.80, -1.00], [3.50, 0.70, 0.40],
        [10.0, 10.0, 10.0], [11.0, 10.3, 9.8], [10.2, 11.1, 10.6],
    ], dtype=torch.float64)
    n_atoms = torch.tensor([5, 3])
    return Batch(z=torch.tensor([6, 1, 8, 7, 1, 8, 1, 1]), pos=pos,
                 batch=torch.repeat_interleave(torch.arange(2), n_atoms), n_atoms=n_atoms)


def random_rotation(seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A random proper rotation (det +1) from a QR decomposition."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def random_molecules(sizes=(5, 9, 3), seed: int = 0, spread: float = 1.6, elements=(1, 6, 7, 8),
                     dtype=torch.float64) -> Batch:
    """Molecules with atoms at least 0.9 Å apart (rejection sampling), mixed sizes."""
    rng = np.random.default_rng(seed)
    numbers, positions = [], []
    for n in sizes:
        pos = []
        while len(pos) < n:
            p = rng.normal(size=3) * spread
            if all(np.linalg.norm(p - q) > 0.9 for q in pos):
                pos.append(p)
        positions.append(np.array(pos))
        numbers.append(rng.choice(elements, size=n))
    n_atoms = torch.tensor(sizes)
    return Batch(z=torch.as_tensor(np.concatenate(numbers)),
                 pos=torch.as_tensor(np.concatenate(positions), dtype=dtype),
                 batch=torch.repeat_interleave(torch.arange(len(sizes)), n_atoms), n_atoms=n_atoms)


def with_pos(batch: Batch, pos: torch.Tensor) -> Batch:
    return Batch(z=batch.z, pos=pos, batch=batch.batch, n_atoms=batch.n_atoms, targets=batch.targets,
                 per_atom=batch.per_atom)


def permute(batch: Batch, seed: int = 0) -> tuple[Batch, torch.Tensor]:
    """Shuffle atoms within each molecule; returns the batch and the permutation applied."""
    g = torch.Generator().manual_seed(seed)
    perm = []
    for start, n in zip(batch.ptr[:-1].tolist(), batch.n_atoms.tolist()):
        perm.append(start + torch.randperm(n, generator=g))
    perm = torch.cat(perm)
    return Batch(z=batch.z[perm], pos=batch.pos[perm], batch=batch.batch[perm], n_atoms=batch.n_atoms), perm


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


ROUNDOFF_FACTOR = 256  # round-off seen in float32: up to ~30 ε of the output's largest value


def symmetry_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of a symmetry check in ``dtype``: 256 ε (float32 3.1e-5, float64 5.7e-14).

    :func:`relative_error` divides the largest deviation by the output's largest value, so this is a
    tolerance on the scale of the output. Rotating and translating inputs of a few Å changes every
    rounding; the deviations seen in float32 (SchNet, PaiNN, heads; several seeds) reach 3.7e-6 ≈ 31 ε
    when an output is small against the intermediate values (forces of an untrained model). A broken
    symmetry is an O(1) relative error, far above either tolerance.
    """
    return ROUNDOFF_FACTOR * torch.finfo(dtype).eps


def assert_symmetries(model, batch: Batch, tol: float | None = None, vector_outputs=("forces", "dipole"),
                      matrix_outputs=("polarizability",)) -> None:
    """Energies (and scalar outputs) invariant; vectors rotate as R v; matrices as R A Rᵀ.

    ``tol`` is relative to each output's largest value; by default :func:`symmetry_tolerance` of the
    batch's dtype."""
    model.eval()
    tol = symmetry_tolerance(batch.pos.dtype) if tol is None else tol
    ref = model(batch)
    rot = random_rotation(1, batch.pos.dtype)
    shift = torch.tensor([1.3, -2.1, 0.7], dtype=batch.pos.dtype)
    moved = model(with_pos(batch, batch.pos @ rot.T + shift))
    perm_batch, perm = permute(batch, 2)
    permuted = model(perm_batch)
    for key, value in ref.items():
        if key in vector_outputs:
            assert relative_error(moved[key], value @ rot.T) < tol, f"{key} does not rotate as a vector"
        elif key in matrix_outputs:
            assert relative_error(moved[key], rot @ value @ rot.T) < tol, f"{key} does not rotate as R A Rᵀ"
        else:
            assert relative_error(moved[key], value) < tol, f"{key} not invariant to rotation + translation"
        if value.shape[0] == len(batch.z) and value.shape[0] != batch.n_molecules:
            assert relative_error(permuted[key], value[perm]) < tol, f"{key} not equivariant to permutation"
        else:
            assert relative_error(permuted[key], value) < tol, f"{key} not invariant to permutation"


def assert_finite_difference_forces(model, batch: Batch, tol: float = 1e-4, h: float = 1e-5,
                                    n_checks: int = 12) -> None:
    """Forces equal −(E(x+h) − E(x−h)) / 2h for a sample of coordinates (float64)."""
    model = model.double().eval()
    batch = batch.to("cpu", torch.float64)
    forces = model(batch)["forces"].detach()
    g = torch.Generator().manual_seed(3)
    coords = torch.randperm(forces.numel(), generator=g)[:n_checks]
    for c in coords.tolist():
        a, k = divmod(c, 3)
        plus, minus = batch.pos.clone(), batch.pos.clone()
        plus[a, k] += h
        minus[a, k] -= h
        e_plus = model(with_pos(batch, plus))["energy"].sum().detach()
        e_minus = model(with_pos(batch, minus))["energy"].sum().detach()
        fd = -(e_plus - e_minus) / (2 * h)
        scale = forces.abs().max()
        assert abs(float(fd - forces[a, k])) < tol * float(scale), \
            f"force on atom {a}, axis {k}: autograd {float(forces[a, k]):.8g} vs finite difference {float(fd):.8g}"


def assert_smooth_at_cutoff(model, cutoff: float, z=(6, 8), tol: float = 1e-6) -> None:
    """Energy and forces of a dimer plus a far atom change continuously as the distance crosses the cutoff."""
    model = model.double().eval()
    energies, forces = [], []
    for d in (cutoff - 1e-6, cutoff + 1e-6):
        pos = torch.tensor([[0.0, 0.0, 0.0], [d, 0.0, 0.0], [0.0, 1.2, 0.0]], dtype=torch.float64)
        batch = Batch(z=torch.tensor([z[0], z[1], 1]), pos=pos, batch=torch.zeros(3, dtype=torch.long),
                      n_atoms=torch.tensor([3]))
        out = model(batch)
        energies.append(float(out["energy"].sum()))
        forces.append(out["forces"].detach())
    assert abs(energies[0] - energies[1]) < tol, f"energy jumps at the cutoff: {energies}"
    assert float((forces[0] - forces[1]).abs().max()) < 1e3 * tol, "forces jump at the cutoff"
