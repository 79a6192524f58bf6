"""Cumulenes H2C=(C=)ₙ₋₂CH2: terminal-rotor sets and rigid profiles (So3krates, Frank et al. 2022, §4, Fig. 2).

The energy depends on the twist φ between the two terminal CH2 groups, whose H atoms are
far apart (C9H4: ~10 Å), through the π system of the chain — a non-local effect. φ is the
angle between the H–H vectors of the two ends, projected onto the plane perpendicular to the
C1 → Cn axis, in [0°, 180°]. Odd-n chains have their minimum at 90°, even-n at 0°; GFN2-xTB
rigid barriers are ≈ 55, 46, 35, 25, 20 kcal/mol for n = 3, 4, 5, 7, 9.

Sampling, per chain length n (the paper's set was never published; this is eqbench's):

1. Build a linear chain (C=C 1.30 Å, C–H 1.08 Å, H–C–H 117°) at its minimum-energy twist and
   relax it with GFN2-xTB (ASE BFGS, fmax 1e-3 eV/Å); compute the Hessian and the normal modes
   with translations, rotations and the terminal torsion projected out.
2. Structure i (its own generator seeded by (seed, i)) has n = sizes[i mod len(sizes)], draws
   a target φ uniform in [0°, 180°], turns the end-B CH2 hydrogens rigidly about the C1 → Cn
   axis to it, and adds a classical harmonic thermal displacement at 300 K.
3. It is labelled with GFN2-xTB at the stored geometry; φ is measured from that geometry.

The vibrations are those of the minimum. Far from it (φ near the barrier, 20–55 kcal/mol up)
the true local vibrations differ — the chain's π bonds weaken — so those samples are
"thermal" only approximately; their labels are exact all the same.

The rigid profile turns the end-B hydrogens of the relaxed minimum to φ = 0°, 5°, …, 180°
about the chain axis through Cn, keeping every bond length at equilibrium.

Atom order: C1 … Cn, then H_a1, H_a2 (on C1), H_b1, H_b2 (on Cn). Each structure stores
``n_carbon`` so that a run can select chain lengths (DataModule ``subset={"n_carbon": [5]}``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
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
from eqbench.errors import GenerationError

if TYPE_CHECKING:
    from ase import Atoms

DEFAULT_SIZES = (3, 4, 5, 7, 9)
RELAX_FMAX = 1e-3  # eV/Å
HESSIAN_DELTA = 0.005  # Å
UNITS = {"energy": ENERGY_UNIT, "forces": FORCE_UNIT, "phi": "deg", "n_carbon": "", "sample_index": ""}
PHI_DEFINITION = ("angle between (H_a2 - H_a1) and (H_b2 - H_b1), both projected onto the plane perpendicular to "
                  "C1 -> Cn, in [0, 180] degrees; H_a* are bonded to C1, H_b* to Cn")


def minimum_phi(n_carbon: int) -> float:
    """Twist of the minimum: allene-like (odd n) ends are perpendicular, even-n ends coplanar."""
    return 90.0 if n_carbon % 2 else 0.0


def atom_roles(n_carbon: int) -> dict:
    n = n_carbon
    return {"carbons": list(range(n)), "h_a": [n, n + 1], "h_b": [n + 2, n + 3], "rotor": [n + 2, n + 3]}


def build_cumulene(n_carbon: int, phi: float | None = None) -> Atoms:
    """Idealised linear H2C=(C=)ₙ₋₂CH2 along z with twist ``phi`` (default: the minimum's)."""
    from ase import Atoms

    if n_carbon < 2:
        raise GenerationError(f"a cumulene needs at least 2 carbons (got {n_carbon})")
    phi = minimum_phi(n_carbon) if phi is None else phi
    cc, ch, half_hch = 1.30, 1.08, np.radians(117.0) / 2
    positions = [[0.0, 0.0, k * cc] for k in range(n_carbon)]
    length = (n_carbon - 1) * cc
    for z, outward, turn in ((0.0, -1.0, 0.0), (length, 1.0, np.radians(phi))):
        for side in (1.0, -1.0):
            x = side * ch * np.sin(half_hch)
            positions.append([x * np.cos(turn), x * np.sin(turn), z + outward * ch * np.cos(half_hch)])
    return Atoms(["C"] * n_carbon + ["H"] * 4, positions)


def _parts(positions: np.ndarray):
    """(C1, Cn, H_a1, H_a2, H_b1, H_b2) of [..., N, 3] positions in this module's atom order."""
    n = positions.shape[-2] - 4
    return (positions[..., 0, :], positions[..., n - 1, :], positions[..., n, :], positions[..., n + 1, :],
            positions[..., n + 2, :], positions[..., n + 3, :])


def signed_phi(positions: np.ndarray) -> np.ndarray:
    """Signed twist in (-180°, 180°] (right-handed about C1 → Cn)."""
    c1, cn, ha1, ha2, hb1, hb2 = _parts(positions)
    return signed_angle_about_axis(ha2 - ha1, hb2 - hb1, cn - c1)


def measure_phi(positions: np.ndarray) -> np.ndarray:
    """φ in [0°, 180°] as defined in :data:`PHI_DEFINITION`."""
    return np.abs(signed_phi(positions))


def rotation_axis(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chain axis through Cn (origin) along C1 → Cn; Cn–H distances stay fixed when turning about it."""
    c1, cn, *_ = _parts(positions)
    return cn, unit(cn - c1)


@functools.lru_cache(maxsize=16)  # deterministic, so a process making the set and its profile builds it once
def build_reference(n_carbon: int, settings: XTBSettings) -> dict[str, np.ndarray]:
    """Relaxed minimum-twist chain, its energy and its thermal normal modes (torsion projected out)."""
    atoms = relax(build_cumulene(n_carbon), settings, fmax=RELAX_FMAX)
    positions = atoms.get_positions()
    origin, axis = rotation_axis(positions)
    rotor = atom_roles(n_carbon)["rotor"]
    torsion = np.zeros_like(positions)
    torsion[rotor] = np.cross(axis, positions[rotor] - origin)
    modes = thermal_modes(hessian(atoms, settings, HESSIAN_DELTA), atoms.get_masses(), positions, [torsion])
    return {"numbers": atoms.numbers, "positions": positions, "energy": np.array(atoms.get_potential_energy()),
            "eigenvalues": modes.eigenvalues, "modes": modes.modes}


def _references(parts: Path, sizes: Sequence[int], settings: XTBSettings) -> dict[int, dict]:
    return {n: load_or_build_reference(parts, f"C{n}H4", lambda n=n: build_reference(n, settings)) for n in sizes}


def _sample_chunk(spec: dict, parts: Path, start: int, stop: int, state: None) -> ChunkResult:
    settings = XTBSettings(**spec["settings"])
    sizes = spec["sizes"]
    result = ChunkResult()
    for i in range(start, stop):
        n = sizes[i % len(sizes)]
        ref = load_reference(parts, f"C{n}H4")
        origin, axis = rotation_axis(ref["positions"])
        rng = np.random.default_rng([spec["seed"], i])  # per structure: independent of workers and chunks
        target = rng.uniform(0.0, 180.0)
        positions = thermal_rotamer(ref["positions"], ThermalModes(ref["eigenvalues"], ref["modes"]),
                                    atom_roles(n)["rotor"], origin, axis, target - float(signed_phi(ref["positions"])),
                                    spec["temperature"], rng)
        positions = on_float32_grid(positions)
        label_into(result, i, ref["numbers"], positions, settings, phi=float(measure_phi(positions)), n_carbon=n)
    return result


def _profile_chunk(spec: dict, parts: Path, start: int, stop: int, state: None) -> ChunkResult:
    settings = XTBSettings(**spec["settings"])
    angles = spec["angles"]
    result = ChunkResult()
    for i in range(start, stop):
        n, phi = spec["sizes"][i // len(angles)], angles[i % len(angles)]
        ref = load_reference(parts, f"C{n}H4")
        origin, axis = rotation_axis(ref["positions"])
        rotor = atom_roles(n)["rotor"]
        turn = functools.partial(rotate_group, group=rotor, origin=origin, axis=axis)
        positions = rotate_to_angle(ref["positions"], turn, signed_phi, phi)
        label_into(result, i, ref["numbers"], positions, settings, phi=phi, n_carbon=n)
    return result


def _metadata(settings: XTBSettings, refs: dict[int, dict]) -> dict:
    return {
        "method": settings.method,
        "calculator": settings.metadata(),
        "units": UNITS | {"positions": "Å"},
        "angle_key": "phi",
        "angle_period": 180.0,
        "group_key": "n_carbon",
        "phi_definition": PHI_DEFINITION,
        "atom_roles": {f"C{n}H4": atom_roles(n) for n in refs},
        "reference": {
            f"C{n}H4": {
                "positions": ref["positions"].round(8).tolist(),
                "energy": float(to_kcal_mol(ref["energy"])),
                "phi": float(measure_phi(ref["positions"])),
                "harmonic_wavenumbers_cm-1":
                    ThermalModes(ref["eigenvalues"], ref["modes"]).wavenumbers().round(1).tolist(),
            } for n, ref in refs.items()
        },
        "relaxation": f"ASE BFGS from build_cumulene(n) at the minimum twist, fmax {RELAX_FMAX} eV/Å",
        "hessian": f"central differences of forces, displacement {HESSIAN_DELTA} Å (ase.vibrations)",
        "paper": "So3krates (Frank, Unke, Müller 2022) §4 and Fig. 2",
    }


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    sizes = [int(n) for n in sizes]
    if not sizes or min(sizes) < 2 or len(set(sizes)) != len(sizes):
        raise GenerationError(f"cumulene sizes must be distinct carbon counts ≥ 2 (got {sizes})")
    return sizes


def generate_cumulene(out: str | Path, n: int = 1200, sizes: Sequence[int] = DEFAULT_SIZES, seed: int = 0,
                      workers: int = 1, temperature: float = 300.0, settings: XTBSettings = DEFAULT_SETTINGS,
                      chunk_size: int = 100, progress: bool = True, command: str | None = None,
                      keep_parts: bool = False):
    """Terminal-rotor set: ``n`` structures *per chain length*, φ uniform plus thermal fluctuations."""
    started = time.perf_counter()
    sizes = _check_sizes(sizes)
    spec = {"kind": "cumulene", "n_per_size": n, "sizes": sizes, "seed": seed, "temperature": temperature,
            "chunk_size": chunk_size, "settings": asdict(settings), "tblite_version": tblite_version()}
    parts = open_parts(out, spec, command or python_call(
        "generate_cumulene", out, {"n": n, "sizes": sizes, "seed": seed, "temperature": temperature,
                                   "settings": settings, "chunk_size": chunk_size}))
    refs = _references(parts, sizes, settings)
    metadata = _metadata(settings, refs) | {
        "description": "cumulenes H2C=(C=)n-2CH2, terminal twist φ uniform plus thermal fluctuations, GFN2-xTB",
        "seed": seed,
        "sampling": {
            "method": "uniform φ (rigid rotation of the end-B hydrogens about the chain axis) plus classical "
                      "harmonic normal-mode displacement of all other vibrations",
            "temperature_K": temperature,
            "size_of_structure": "sizes[index % len(sizes)]",
            "rng": "numpy.random.default_rng([seed, index]) per structure",
            "positions": "rounded to float32 precision before labelling",
        },
    }
    plan = Plan("cumulene", spec, _sample_chunk, independent_chunks(n * len(sizes), chunk_size), UNITS,
                metadata=metadata)
    return run_plan(plan, parts, out, workers, progress, keep_parts, started)


def generate_cumulene_profile(out: str | Path, sizes: Sequence[int] = DEFAULT_SIZES, step: float = 5.0,
                              workers: int = 1, settings: XTBSettings = DEFAULT_SETTINGS, progress: bool = True,
                              command: str | None = None, keep_parts: bool = False):
    """Rigid scans φ = 0°, step, …, 180° at each relaxed chain (So3krates Fig. 2); φ stored as scanned."""
    started = time.perf_counter()
    sizes = _check_sizes(sizes)
    angles = np.arange(0.0, 180.0 + 1e-9, step).round(6).tolist()
    spec = {"kind": "cumulene-profile", "sizes": sizes, "angles": angles, "settings": asdict(settings),
            "tblite_version": tblite_version()}
    parts = open_parts(out, spec, command or python_call(
        "generate_cumulene_profile", out, {"sizes": sizes, "step": step, "settings": settings}))
    refs = _references(parts, sizes, settings)
    metadata = _metadata(settings, refs) | {
        "description": "cumulene rigid terminal-twist scans at the relaxed geometries, GFN2-xTB",
        "sampling": {"method": "rigid rotation of the end-B hydrogens about the chain axis, bond lengths fixed",
                     "step_deg": step},
    }
    plan = Plan("cumulene-profile", spec, _profile_chunk, independent_chunks(len(angles) * len(sizes), len(angles)),
                UNITS, metadata=metadata)
    return run_plan(plan, parts, out, workers, progress, keep_parts, started)
