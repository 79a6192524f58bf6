"""MD17-style sets: Langevin MD at 500 K on GFN2-xTB, frames at a fixed stride.

MD17 (Chmiela et al. 2017) sampled molecules with NVT ab-initio MD at 500 K; here the
potential is GFN2-xTB (tblite) and the thermostat ASE's Langevin integrator. Each of
``trajectories`` independent trajectories starts from the relaxed molecule with
Maxwell–Boltzmann velocities, equilibrates for ``equilibration`` steps (not stored), then
stores every ``stride``-th step. Trajectory t draws its velocities and thermostat noise from
a generator seeded by (seed, t); a chunk saves the positions, momenta and generator state it
ended with, and the next chunk of the trajectory continues from exactly there — so a resumed
run is identical to an uninterrupted one. Parallelism is across trajectories.

Each frame stores GFN2-xTB's energy, forces and dipole moment (D, from the same SCF; origin-independent
for a neutral molecule), the labels of a joint energy/forces/dipole model (PaiNN §5.4).

Molecules: ``ethanol`` (ASE's built-in geometry), ``aspirin`` (``molecules/aspirin.xyz``, built
by :mod:`~eqbench.data.generate.build_aspirin`), or any file ASE reads (xyz, ...); the start
geometry is relaxed with GFN2-xTB first.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from eqbench.data.generate.chunks import ChunkResult, load_reference, record_label
from eqbench.data.generate.engine import (
    DEFAULT_SETTINGS,
    ENERGY_UNIT,
    FORCE_UNIT,
    Label,
    SCFNotConverged,
    XTBSettings,
    make_ase_calculator,
    relax,
    tblite_version,
    to_debye,
    to_kcal_mol,
)
from eqbench.data.generate.runner import Plan, load_or_build_reference, open_parts, python_call, run_plan
from eqbench.errors import GenerationError

BUILTIN = ("ethanol", "aspirin")
UNITS = {"energy": ENERGY_UNIT, "forces": FORCE_UNIT, "dipole": "D", "trajectory": "", "time": "fs",
         "sample_index": ""}
RELAX_FMAX = 1e-3  # eV/Å


def load_molecule(molecule: str | Path):
    """ASE Atoms of a built-in molecule name or a structure file."""
    from ase.build import molecule as ase_molecule
    from ase.io import read

    if molecule == "ethanol":
        return ase_molecule("CH3CH2OH")
    if molecule == "aspirin":
        from eqbench.data.generate.build_aspirin import ASPIRIN_XYZ

        return read(ASPIRIN_XYZ)
    path = Path(molecule)
    if not path.is_file():
        raise GenerationError(f"molecule {str(molecule)!r} is neither a built-in ({', '.join(BUILTIN)}) nor an "
                              f"existing structure file; check the name or path")
    try:
        atoms = read(path)
    except Exception as err:  # ASE raises many types for unreadable files; report them all the same way
        raise GenerationError(f"{path}: ASE cannot read it as a structure ({err}); give an xyz file") from err
    if len(atoms) < 2:
        raise GenerationError(f"{path}: needs at least 2 atoms for MD (found {len(atoms)})")
    return atoms


def _frames_per_trajectory(n: int, trajectories: int) -> list[int]:
    return [n // trajectories + (t < n % trajectories) for t in range(trajectories)]


def md_chunks(n: int, trajectories: int, chunk_size: int) -> tuple[tuple[int, int, int | None], ...]:
    """Chunks in trajectory-major order; each continues the previous chunk of its trajectory."""
    if n < trajectories or trajectories < 1 or chunk_size < 1:
        raise GenerationError(f"need n ≥ trajectories ≥ 1 and chunk_size ≥ 1 (got n={n}, "
                              f"trajectories={trajectories}, chunk_size={chunk_size})")
    chunks, start = [], 0
    for frames in _frames_per_trajectory(n, trajectories):
        previous = None
        for a in range(start, start + frames, chunk_size):
            chunks.append((a, min(a + chunk_size, start + frames), previous))
            previous = len(chunks) - 1
        start += frames
    return tuple(chunks)


def _trajectory_of(spec: dict, index: int) -> tuple[int, int]:
    """(trajectory, frame within it) of global frame ``index``."""
    bounds = np.cumsum([0] + _frames_per_trajectory(spec["n"], spec["trajectories"]))
    t = int(np.searchsorted(bounds, index, side="right") - 1)
    return t, index - int(bounds[t])


def _md_chunk(spec: dict, parts: Path, start: int, stop: int, state: dict | None) -> ChunkResult:
    from ase import Atoms, units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.29
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    ref = load_reference(parts, "start")
    settings = XTBSettings(**spec["settings"])
    t, frame = _trajectory_of(spec, start)
    atoms = Atoms(numbers=ref["numbers"], positions=ref["positions"])
    calc = atoms.calc = make_ase_calculator(settings)
    rng = np.random.default_rng([spec["seed"], t])  # per trajectory: independent of workers and chunks
    if state is None:
        thermalize_momenta(atoms, temperature_K=spec["temperature"], rng=rng)
        Stationary(atoms)
        ZeroRotation(atoms)
    else:
        atoms.set_positions(state["positions"])
        atoms.set_momenta(state["momenta"])
        rng.bit_generator.state = json.loads(str(state["rng"]))
    # FixCom instead of Langevin(fixcm=True), which ASE deprecates for not sampling NVT exactly.
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, spec["timestep_fs"] * units.fs, temperature_K=spec["temperature"],
                   friction=spec["friction_per_fs"] / units.fs, fixcm=False, rng=rng)
    result = ChunkResult()
    try:
        if state is None:
            dyn.run(spec["equilibration_steps"])
        for i in range(start, stop):
            retries_before = calc.retries
            dyn.run(spec["stride"])
            label = Label(atoms.get_potential_energy(), atoms.get_forces(apply_constraint=False),
                          calc.retries - retries_before, atoms.get_dipole_moment())
            time_fs = (frame + i - start + 1) * spec["stride"] * spec["timestep_fs"]
            record_label(result, i, atoms.numbers, atoms.get_positions(), label, trajectory=t, time=time_fs,
                         dipole=to_debye(label.dipole))
    except SCFNotConverged as err:
        raise GenerationError(f"trajectory {t}: the SCF failed with every retry ({err}); MD cannot skip a step. "
                              f"Use another seed or other calculator settings") from err
    result.state = {"positions": atoms.get_positions(), "momenta": atoms.get_momenta(),
                    "rng": np.array(json.dumps(rng.bit_generator.state))}
    return result


def generate_md(out: str | Path, molecule: str | Path = "ethanol", n: int = 1000, seed: int = 0, workers: int = 1,
                temperature: float = 500.0, timestep: float = 0.5, friction: float = 0.01, stride: int = 10,
                equilibration: int = 1000, trajectories: int = 1, settings: XTBSettings = DEFAULT_SETTINGS,
                chunk_size: int = 100, progress: bool = True, command: str | None = None, keep_parts: bool = False):
    """Langevin MD at ``temperature`` K; ``timestep`` in fs, ``friction`` in 1/fs, ``stride`` and
    ``equilibration`` in steps; ``n`` frames over ``trajectories`` independent trajectories."""
    started = time.perf_counter()
    start = load_molecule(molecule)
    geometry = np.concatenate([start.numbers[:, None], start.positions], axis=1)
    spec = {"kind": "md", "molecule": str(molecule), "formula": start.get_chemical_formula(),
            "input_geometry_sha256": hashlib.sha256(np.ascontiguousarray(geometry).tobytes()).hexdigest(),
            "n": n, "seed": seed, "temperature": temperature, "timestep_fs": timestep, "friction_per_fs": friction,
            "stride": stride, "equilibration_steps": equilibration, "trajectories": trajectories,
            "chunk_size": chunk_size, "settings": asdict(settings), "tblite_version": tblite_version()}
    chunks = md_chunks(n, trajectories, chunk_size)
    parts = open_parts(out, spec, command or python_call(
        "generate_md", out, {"molecule": str(molecule), "n": n, "seed": seed, "temperature": temperature,
                             "timestep": timestep, "friction": friction, "stride": stride,
                             "equilibration": equilibration, "trajectories": trajectories, "settings": settings,
                             "chunk_size": chunk_size}))

    def build() -> dict[str, np.ndarray]:
        atoms = relax(start.copy(), settings, fmax=RELAX_FMAX)
        return {"numbers": atoms.numbers, "positions": atoms.get_positions(),
                "energy": np.array(atoms.get_potential_energy())}

    ref = load_or_build_reference(parts, "start", build)
    metadata = {
        "description": f"{start.get_chemical_formula()} ({molecule}) Langevin MD at {temperature} K on GFN2-xTB",
        "method": settings.method,
        "calculator": settings.metadata(),
        "units": UNITS | {"positions": "Å"},
        "seed": seed,
        "sampling": {
            "method": "ase.md.langevin.Langevin (fixcm=False) with ase.constraints.FixCom, Maxwell-Boltzmann start "
                      "velocities (zero total momentum and angular momentum)",
            "temperature_K": temperature, "timestep_fs": timestep, "friction_per_fs": friction,
            "stride_steps": stride, "equilibration_steps": equilibration, "trajectories": trajectories,
            "rng": "numpy.random.default_rng([seed, trajectory]) per trajectory",
            "forces": "unconstrained GFN2-xTB forces (FixCom acts on the dynamics only)",
        },
        "start_geometry": {"positions": ref["positions"].round(8).tolist(), "numbers": ref["numbers"].tolist(),
                           "energy": float(to_kcal_mol(ref["energy"])),
                           "relaxation": f"ASE BFGS from {molecule}, fmax {RELAX_FMAX} eV/Å"},
    }
    plan = Plan("md", spec, _md_chunk, chunks, UNITS, metadata=metadata)
    return run_plan(plan, parts, out, workers, progress, keep_parts, started)
