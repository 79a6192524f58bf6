"""Thermal (harmonic, classical) sampling of vibrations around a relaxed geometry.

The rotor sets sample "thermal fluctuations (300 K) and ring rotations" (PaiNN §5.3.2). The
torsion is drawn explicitly (uniformly), and every other vibration is drawn from the classical
Boltzmann distribution of the harmonic approximation at the minimum: each normal coordinate
q_k (mass-weighted) is Gaussian with variance kT/λ_k, λ_k the Hessian eigenvalue. The torsion,
the three translations and three rotations are projected out of the Hessian first, so the
sampled displacement neither moves θ/φ systematically nor moves or turns the molecule.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eqbench.data.generate.engine import XTBSettings, make_ase_calculator
from eqbench.data.generate.torsion import rotation_matrix
from eqbench.errors import GenerationError


def hessian(atoms, settings: XTBSettings, delta: float = 0.005) -> np.ndarray:
    """[3N, 3N] Hessian (eV/Å²) by central differences of GFN2-xTB forces (ASE's Vibrations)."""
    from ase.vibrations import Vibrations

    atoms = atoms.copy()
    atoms.calc = make_ase_calculator(settings)
    with tempfile.TemporaryDirectory(prefix="eqbench-vib-") as tmp:
        vib = Vibrations(atoms, name=str(Path(tmp) / "vib"), delta=delta, nfree=2)
        vib.run()
        h = vib.get_vibrations().get_hessian_2d()
    return 0.5 * (h + h.T)  # finite differences are symmetric only to O(delta²)


@dataclass
class ThermalModes:
    eigenvalues: np.ndarray  # [M] eV / (Å² amu)
    modes: np.ndarray  # [M, N, 3] Cartesian displacement (Å) per unit mass-weighted coordinate (Å √amu)

    def sample(self, temperature: float, rng: np.random.Generator) -> np.ndarray:
        """One [N, 3] displacement from the classical harmonic distribution at ``temperature`` (K)."""
        from ase.units import kB  # eV/K

        q = rng.standard_normal(len(self.eigenvalues)) * np.sqrt(kB * temperature / self.eigenvalues)
        return np.einsum("m,mna->na", q, self.modes)

    def wavenumbers(self) -> np.ndarray:
        """Harmonic wavenumbers (cm⁻¹) of the sampled modes, for the metadata."""
        from ase import units

        omega = np.sqrt(self.eigenvalues / units._amu * units._e) * 1e10  # rad/s
        return omega / (2 * np.pi * units._c * 100)


def thermal_modes(hess: np.ndarray, masses: np.ndarray, positions: np.ndarray,
                  frozen: Sequence[np.ndarray] = ()) -> ThermalModes:
    """Normal modes of ``hess`` with translations, rotations and the ``frozen`` motions removed.

    ``frozen``: [N, 3] Cartesian displacement patterns to exclude (e.g. the ring torsion).
    """
    n = len(masses)
    sqrt_m = np.repeat(np.sqrt(masses), 3)
    h_mw = hess / np.outer(sqrt_m, sqrt_m)
    centre = (masses[:, None] * positions).sum(0) / masses.sum()
    r = positions - centre
    excluded = [np.tile(np.eye(3)[k], (n, 1)) for k in range(3)]  # translations
    excluded += [np.cross(np.eye(3)[k], r) for k in range(3)]  # rotations
    excluded += [np.asarray(f, dtype=float) for f in frozen]
    basis = np.stack([e.reshape(-1) * sqrt_m for e in excluded], axis=1)  # mass-weighted
    u, s, _ = np.linalg.svd(basis, full_matrices=False)
    q = u[:, s > 1e-8 * s.max()]
    proj = np.eye(3 * n) - q @ q.T
    values, vectors = np.linalg.eigh(proj @ h_mw @ proj)
    overlap = np.linalg.norm(q.T @ vectors, axis=0)  # 1 for excluded directions, 0 for the rest
    keep = overlap < 0.5
    values, vectors = values[keep], vectors[:, keep]
    if values.min() <= 0:
        raise GenerationError(f"the reference geometry is not a minimum: Hessian eigenvalue {values.min():.3g} "
                              f"eV/(Å² amu) ≤ 0 after removing rigid motions and the torsion; relax it tighter")
    modes = (vectors / sqrt_m[:, None]).T.reshape(-1, n, 3)
    return ThermalModes(values, modes)


def thermal_rotamer(reference: np.ndarray, modes: ThermalModes, rotor: Sequence[int], origin: np.ndarray,
                    axis: np.ndarray, angle: float, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """The reference with ``rotor`` turned rigidly by ``angle`` (degrees) plus a thermal displacement.

    The displacement is drawn in the reference orientation; its rotor part is turned with the
    rotor, so the rotor vibrates in its own frame. This assumes the vibrations barely depend on
    the torsion, true when the torsional energy is small against the vibrational energy
    (ferrocene: ~1 kcal/mol against ~(3N-7)/2·kT ≈ 17 kcal/mol at 300 K).
    """
    rot = rotation_matrix(axis, angle)
    positions = np.array(reference, dtype=float)
    positions[rotor] = (positions[rotor] - origin) @ rot.T + origin
    displacement = modes.sample(temperature, rng)
    displacement[rotor] = displacement[rotor] @ rot.T
    return positions + displacement
