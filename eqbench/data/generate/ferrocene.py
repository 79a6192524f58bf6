"""1,1'-difluoroferrocene: ring-rotation set and rigid profile (PaiNN, Schütt et al. 2021, §5.3.2, Fig. 4).

One H of each cyclopentadienyl ring is replaced by F. The label that matters is the ring
rotation angle θ: the signed angle from the C–F direction of ring A to that of ring B about
the ring axis (centroid of ring A's carbons → centroid of ring B's), in [0°, 360°). The
energy changes by less than 1 kcal/mol with θ (0.8 kcal/mol in GFN2-xTB's rigid scan) and θ
is set by the two F atoms, ~6.5 Å apart, which is what defeats invariant models with small
cutoffs.

Sampling (the paper's set was never published; this is eqbench's regeneration):

1. Build an idealised geometry (Fe between two parallel rings, θ = 144°, the rotamer with
   the F atoms farthest apart among the eclipsed ones) and relax it with GFN2-xTB (ASE BFGS,
   fmax 1e-3 eV/Å). This is the reference, a true minimum.
2. Compute its Hessian by finite differences and the normal modes with translations,
   rotations and the ring torsion projected out (:mod:`~eqbench.data.generate.normal_modes`).
3. Structure i draws, from its own generator seeded by (seed, i): a target θ uniform in
   [0°, 360°), turns ring B (C5H4F) rigidly to it about the Fe → ring-B-centroid axis, and adds
   a classical harmonic thermal displacement at 300 K (each normal coordinate Gaussian with
   variance kT/λ), whose ring-B part turns with the ring.
4. It is labelled with GFN2-xTB energy and forces at the stored geometry; θ is measured from
   that geometry. θ is uniform because a uniform angle plus any noise is uniform on the circle.

The rigid profile (the paper's Fig. 4: "varying θ while keeping all bond distances fixed at
their equilibrium values") turns ring B of the relaxed reference to θ = 0°, 5°, …, 355° about
the axis through Fe, which keeps every bond — ring C–C/C–H/C–F and Fe–C — at its
equilibrium length.

Atom order: Fe; ring A: C (ipso first), F, 4 H; ring B: C (ipso first), F, 4 H.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eqbench.data.generate.chunks import ChunkResult, label_into, load_reference, on_float32_grid
from eqbench.data.generate.engine import (
    DEFAULT_SETTINGS,
    ENERGY_UNIT,
    FORCE_UNIT,
    XTBSettings,
    relax,
    tblite_version,
    to_kcal_mol,
)
from eqbench.data.generate.normal_modes import ThermalModes, hessian, thermal_modes, thermal_rotamer
from eqbench.data.generate.runner import (
    Plan,
    independent_chunks,
    load_or_build_reference,
    open_parts,
    python_call,
    run_plan,
)
from eqbench.data.generate.torsion import rotate_group, rotate_to_angle, signed_angle_about_axis, unit

if TYPE_CHECKING:
    from ase import Atoms

FE = 0
RING_A = np.arange(1, 6)  # carbons; RING_A[0] is the ipso carbon carrying F
F_A = 6
RING_B = np.arange(11, 16)
F_B = 16
ROTOR = np.arange(11, 21)  # ring B with its F and H atoms
THETA_START = 144.0  # degrees; relaxation starts (and stays) at this rotamer
RELAX_FMAX = 1e-3  # eV/Å
HESSIAN_DELTA = 0.005  # Å
UNITS = {"energy": ENERGY_UNIT, "forces": FORCE_UNIT, "theta": "deg", "sample_index": ""}
ATOM_ROLES = {"fe": FE, "ring_a_carbons": RING_A.tolist(), "f_a": F_A, "ring_b_carbons": RING_B.tolist(),
              "f_b": F_B, "rotor": ROTOR.tolist()}
THETA_DEFINITION = ("signed angle from (F_a - ipso C_a) to (F_b - ipso C_b), both projected onto the plane "
                    "perpendicular to the axis centroid(ring A carbons) -> centroid(ring B carbons), "
                    "right-handed about that axis, in [0, 360) degrees")


def build_ferrocene(theta: float = THETA_START) -> Atoms:
    """Idealised 1,1'-difluoroferrocene (eclipsed rings 3.3 Å apart, ring B turned by ``theta``)."""
    from ase import Atoms

    c_radius = 1.43 / (2 * np.sin(np.pi / 5))  # regular pentagon with C–C 1.43 Å
    symbols, positions = ["Fe"], [[0.0, 0.0, 0.0]]
    for z, turn in ((-1.66, 0.0), (1.66, np.radians(theta))):
        angles = turn + 2 * np.pi * np.arange(5) / 5
        symbols += ["C"] * 5 + ["F"] + ["H"] * 4
        positions += [[c_radius * np.cos(a), c_radius * np.sin(a), z] for a in angles]
        for k, a in enumerate(angles):  # substituent k sits radially outside carbon k
            r = c_radius + (1.35 if k == 0 else 1.08)
            positions.append([r * np.cos(a), r * np.sin(a), z])
    return Atoms(symbols, positions)


def signed_theta(positions: np.ndarray) -> np.ndarray:
    """θ in (-180°, 180°]; ``positions`` [N, 3] or [B, N, 3] in this module's atom order."""
    axis = positions[..., RING_B, :].mean(-2) - positions[..., RING_A, :].mean(-2)
    u = positions[..., F_A, :] - positions[..., RING_A[0], :]
    v = positions[..., F_B, :] - positions[..., RING_B[0], :]
    return signed_angle_about_axis(u, v, axis)


def measure_theta(positions: np.ndarray) -> np.ndarray:
    """θ in [0°, 360°) as defined in :data:`THETA_DEFINITION`."""
    theta = np.mod(signed_theta(positions), 360.0)
    return np.where(theta >= 360.0, 0.0, theta)  # np.mod(-1e-17, 360) rounds to 360


def rotation_axis(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Origin and direction of the rigid ring-B rotation: the line through Fe and ring B's centroid.

    Fe lies on it, so Fe–C distances stay fixed (the centroid–centroid line misses Fe by a little).
    """
    origin = positions[FE]
    return origin, unit(positions[RING_B].mean(0) - origin)


@functools.lru_cache(maxsize=4)  # deterministic, so a process making the set and its profile builds it once
def build_reference(settings: XTBSettings) -> dict[str, np.ndarray]:
    """Relaxed minimum, its energy and its thermal normal modes (torsion projected out)."""
    atoms = relax(build_ferrocene(), settings, fmax=RELAX_FMAX)
    positions = atoms.get_positions()
    origin, axis = rotation_axis(positions)
    torsion = np.zeros_like(positions)
    torsion[ROTOR] = np.cross(axis, positions[ROTOR] - origin)
    modes = thermal_modes(hessian(atoms, settings, HESSIAN_DELTA), atoms.get_masses(), positions, [torsion])
    return {"numbers": atoms.numbers, "positions": positions, "energy": np.array(atoms.get_potential_energy()),
            "eigenvalues": modes.eigenvalues, "modes": modes.modes}


def _sample_chunk(spec: dict, parts: Path, start: int, stop: int, state: None) -> ChunkResult:
    ref = load_reference(parts, "ferrocene")
    settings = XTBSettings(**spec["settings"])
    modes = ThermalModes(ref["eigenvalues"], ref["modes"])
    origin, axis = rotation_axis(ref["positions"])
    theta_ref = float(measure_theta(ref["positions"]))
    result = ChunkResult()
    for i in range(start, stop):
        rng = np.random.default_rng([spec["seed"], i])  # per structure: independent of workers and chunks
        target = rng.uniform(0.0, 360.0)
        positions = thermal_rotamer(ref["positions"], modes, ROTOR, origin, axis, target - theta_ref,
                                    spec["temperature"], rng)
        positions = on_float32_grid(positions)
        label_into(result, i, ref["numbers"], positions, settings, theta=float(measure_theta(positions)))
    return result


def _profile_chunk(spec: dict, parts: Path, start: int, stop: int, state: None) -> ChunkResult:
    ref = load_reference(parts, "ferrocene")
    settings = XTBSettings(**spec["settings"])
    origin, axis = rotation_axis(ref["positions"])
    result = ChunkResult()
    for i in range(start, stop):
        theta = spec["angles"][i]
        turn = functools.partial(rotate_group, group=ROTOR, origin=origin, axis=axis)
        positions = rotate_to_angle(ref["positions"], turn, signed_theta, theta)
        label_into(result, i, ref["numbers"], positions, settings, theta=theta)
    return result


def _reference_metadata(ref: dict) -> dict:
    return {
        "positions": ref["positions"].round(8).tolist(),
        "numbers": ref["numbers"].tolist(),
        "energy": float(to_kcal_mol(ref["energy"])),
        "theta": float(measure_theta(ref["positions"])),
        "harmonic_wavenumbers_cm-1": ThermalModes(ref["eigenvalues"], ref["modes"]).wavenumbers().round(1).tolist(),
        "relaxation": f"ASE BFGS from build_ferrocene(theta={THETA_START}), fmax {RELAX_FMAX} eV/Å",
        "hessian": f"central differences of forces, displacement {HESSIAN_DELTA} Å (ase.vibrations)",
    }


def _common_metadata(settings: XTBSettings, ref: dict) -> dict:
    return {
        "method": settings.method,
        "calculator": settings.metadata(),
        "units": UNITS | {"positions": "Å"},
        "angle_key": "theta",
        "angle_period": 360.0,
        "theta_definition": THETA_DEFINITION,
        "atom_roles": ATOM_ROLES,
        "reference": _reference_metadata(ref),
        "paper": "PaiNN (Schütt, Unke, Gastegger 2021) §5.3.2 and Fig. 4",
    }


def generate_ferrocene(out: str | Path, n: int = 12_000, seed: int = 0, workers: int = 1, temperature: float = 300.0,
                       settings: XTBSettings = DEFAULT_SETTINGS, chunk_size: int = 100, progress: bool = True,
                       command: str | None = None, keep_parts: bool = False):
    """Ring-rotation set: θ uniform in [0°, 360°) plus harmonic thermal fluctuations at ``temperature`` K.

    Default size: the paper's 10,000 train + 1,000 validation, plus 1,000 for testing.
    Returns a :class:`~eqbench.data.generate.runner.GenerationResult`.
    """
    started = time.perf_counter()
    spec = {"kind": "ferrocene", "n": n, "seed": seed, "temperature": temperature, "chunk_size": chunk_size,
            "settings": asdict(settings), "tblite_version": tblite_version()}
    parts = open_parts(out, spec, command or python_call(
        "generate_ferrocene", out, {"n": n, "seed": seed, "temperature": temperature, "settings": settings,
                                    "chunk_size": chunk_size}))
    ref = load_or_build_reference(parts, "ferrocene", lambda: build_reference(settings))
    metadata = _common_metadata(settings, ref) | {
        "description": "1,1'-difluoroferrocene, ring rotation θ uniform plus thermal fluctuations, GFN2-xTB",
        "seed": seed,
        "sampling": {
            "method": "uniform θ (rigid rotation of ring B about the Fe-centroid axis) plus classical harmonic "
                      "normal-mode displacement of all other vibrations",
            "temperature_K": temperature,
            "rng": "numpy.random.default_rng([seed, index]) per structure",
            "positions": "rounded to float32 precision before labelling",
        },
    }
    plan = Plan("ferrocene", spec, _sample_chunk, independent_chunks(n, chunk_size), UNITS, metadata=metadata)
    return run_plan(plan, parts, out, workers, progress, keep_parts, started)


def generate_ferrocene_profile(out: str | Path, step: float = 5.0, workers: int = 1,
                               settings: XTBSettings = DEFAULT_SETTINGS, progress: bool = True,
                               command: str | None = None, keep_parts: bool = False):
    """Rigid scan θ = 0°, step, …, < 360° at the relaxed geometry (PaiNN Fig. 4); θ stored as scanned."""
    started = time.perf_counter()
    angles = np.arange(0.0, 360.0 - 1e-9, step).round(6).tolist()
    spec = {"kind": "ferrocene-profile", "angles": angles, "settings": asdict(settings),
            "tblite_version": tblite_version()}
    parts = open_parts(out, spec, command or python_call(
        "generate_ferrocene_profile", out, {"step": step, "settings": settings}))
    ref = load_or_build_reference(parts, "ferrocene", lambda: build_reference(settings))
    metadata = _common_metadata(settings, ref) | {
        "description": "1,1'-difluoroferrocene rigid ring-rotation scan at the relaxed geometry, GFN2-xTB",
        "sampling": {"method": "rigid rotation of ring B about the Fe-centroid axis, bond lengths fixed",
                     "step_deg": step},
    }
    plan = Plan("ferrocene-profile", spec, _profile_chunk, independent_chunks(len(angles), 24), UNITS,
                metadata=metadata)
    return run_plan(plan, parts, out, workers, progress, keep_parts, started)

