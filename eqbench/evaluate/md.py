"""Molecular dynamics with a trained run: ``eqbench md RUN --atoms FILE``.

The run becomes an :class:`eqbench.ase.Calculator`; ASE integrates the equations of motion, NVE
(velocity Verlet) or NVT (Langevin). ``eqbench md gfn2-xtb`` runs the same MD on GFN2-xTB itself
(tblite), the reference for a trained model's trajectories and spectra.

Every ``--interval`` steps a frame is written with positions, velocities, potential energy, forces
and (when the run has a dipole head) the dipole moment, to an extended XYZ (``.xyz``/``.extxyz``) or
ASE trajectory (``.traj``) file, written to a temporary file and renamed when complete. Each frame's
``info`` holds ``time_fs``, ``total_energy`` (eV) and ``temperature_K``.

At the end the total energy is checked: for NVE its drift (slope of a straight-line fit) in meV per
atom per ps and its largest excursion from the start in meV per atom are printed, with a warning
above ``--max-drift``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from eqbench.errors import ConfigError, DataError

FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".traj": "traj"}
XTB = "gfn2-xtb"  # `eqbench md gfn2-xtb --atoms ...`: the reference potential instead of a trained run


def energy_drift(times_fs: np.ndarray, total_energy_ev: np.ndarray, n_atoms: int) -> dict[str, float]:
    """Drift of the total energy: slope of a least-squares line (meV/atom/ps) and max |E(t) − E(0)| (meV/atom)."""
    t_ps = np.asarray(times_fs, dtype=np.float64) / 1000.0
    e_mev = np.asarray(total_energy_ev, dtype=np.float64) * 1000.0 / n_atoms
    slope = float(np.polyfit(t_ps, e_mev, 1)[0]) if len(t_ps) > 1 and np.ptp(t_ps) > 0 else 0.0
    return {"drift_mev_per_atom_per_ps": slope, "max_deviation_mev_per_atom": float(np.max(np.abs(e_mev - e_mev[0])))}


def run_md(calc, atoms, steps: int, timestep_fs: float = 0.5, temperature_K: float = 300.0,
           thermostat: str = "nve", friction_per_fs: float = 0.01, out: str | Path | None = None, interval: int = 10,
           seed: int = 0, progress: bool = True, initial_velocities: bool = True) -> dict:
    """Run ``steps`` MD steps of ``atoms`` with ``calc``; returns the energy record and the drift summary."""
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet

    if steps < 1 or interval < 1 or timestep_fs <= 0:
        raise ConfigError(f"steps ({steps}) and interval ({interval}) must be ≥ 1 and the timestep ({timestep_fs} fs) "
                          f"positive")
    if thermostat not in ("nve", "langevin"):
        raise ConfigError(f"thermostat must be 'nve' or 'langevin', not {thermostat!r}")
    fmt = None
    if out is not None:
        out = Path(out)
        fmt = FORMATS.get(out.suffix.lower())
        if fmt is None:
            raise ConfigError(f"trajectory {out}: use a .xyz/.extxyz (extended XYZ) or .traj (ASE) file name")
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    if initial_velocities:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        Stationary(atoms)
        ZeroRotation(atoms)
    dt = timestep_fs * units.fs
    if thermostat == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt)
    else:
        dyn = Langevin(atoms, timestep=dt, temperature_K=temperature_K, friction=friction_per_fs / units.fs, rng=rng,
                       fixcm=False)

    times, energies = [], []
    writer = None
    tmp = None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        if fmt == "traj":
            from ase.io.trajectory import Trajectory

            writer = Trajectory(str(tmp), "w")
        else:
            writer = open(tmp, "w")

    def record():
        step = dyn.nsteps
        epot = atoms.get_potential_energy()
        ekin = atoms.get_kinetic_energy()
        times.append(step * timestep_fs)
        energies.append(epot + ekin)
        if writer is None or step % interval:
            return
        frame = atoms.copy()
        results = {k: v for k, v in calc.results.items() if k in ("energy", "free_energy", "forces", "dipole")}
        frame.calc = SinglePointCalculator(frame, **results)
        frame.info.update(time_fs=step * timestep_fs, total_energy=epot + ekin,
                          temperature_K=ekin / (1.5 * units.kB * len(atoms)))
        if fmt == "traj":
            writer.write(frame)
        else:
            from ase.io import write

            write(writer, frame, format="extxyz")

    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"MD ({thermostat})", unit="step", disable=not progress, file=sys.stderr)
        # ASE calls observers at step 0 too, so the start is recorded and written.
        dyn.attach(record, interval=1)
        dyn.attach(lambda: bar.update(dyn.nsteps - bar.n), interval=1)
        dyn.run(steps)
        bar.close()
    finally:
        if writer is not None:
            writer.close()
    if tmp is not None:
        os.replace(tmp, out)
    summary = energy_drift(np.array(times), np.array(energies), len(atoms))
    summary.update(times_fs=np.array(times), total_energy=np.array(energies), thermostat=thermostat,
                   n_atoms=len(atoms), final_atoms=atoms)
    return summary


def read_structure(path: str | Path, index: int = 0):
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise DataError(f"structure file {path} not found")
    try:
        return read(str(path), index=index)
    except (ValueError, KeyError, IndexError, OSError) as err:
        raise DataError(f"{path}: cannot read a structure ({err}); give an xyz/extxyz/traj/pdb file") from err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help=f"run directory (or a .ckpt inside one) of a model trained on energies/forces, "
                                    f"or {XTB!r} for reference MD on GFN2-xTB (tblite; energies, forces, dipoles)")
    parser.add_argument("--atoms", required=True, help="starting structure (any file ASE reads: xyz, extxyz, traj)")
    parser.add_argument("--index", type=int, default=0, help="frame of --atoms to start from (default 0)")
    parser.add_argument("--out", default=None, help="trajectory to write, .extxyz/.xyz or .traj (default "
                                                    "RUN/md/<atoms stem>.extxyz)")
    parser.add_argument("--steps", type=int, default=1000, help="MD steps (default 1000)")
    parser.add_argument("--timestep", type=float, default=0.5, help="timestep in fs (default 0.5)")
    parser.add_argument("--temperature", type=float, default=300.0,
                        help="K: initial Maxwell–Boltzmann velocities, and the Langevin bath (default 300)")
    parser.add_argument("--thermostat", choices=["nve", "langevin"], default="nve")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)")
    parser.add_argument("--interval", type=int, default=1, help="write every N-th step (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and Langevin noise")
    parser.add_argument("--checkpoint", default="best", help="best or last (default best)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--float32", action="store_true", help="evaluate in float32 (default float64, which "
                                                               "conserves energy better)")
    parser.add_argument("--max-drift", type=float, default=1.0,
                        help="NVE: warn when |drift| exceeds this many meV/atom/ps (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1: one small "
                                                               "molecule gains nothing from more)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from eqbench.ase import Calculator

    if args.threads < 1:
        raise ConfigError(f"--threads must be ≥ 1, not {args.threads}")
    torch.set_num_threads(args.threads)
    if args.run == XTB:
        from eqbench.data.generate.engine import DEFAULT_SETTINGS

        calc = DEFAULT_SETTINGS.calculator()  # tblite's own calculator: it also returns the dipole (e·Å)
        default_out = Path("md") / f"{Path(args.atoms).stem}_{XTB}.extxyz"
    else:
        calc = Calculator(args.run, checkpoint=args.checkpoint, device=args.device,
                          dtype="float32" if args.float32 else "float64")
        default_out = Path(args.run) / "md" / f"{Path(args.atoms).stem}.extxyz"
    atoms = read_structure(args.atoms, args.index)
    atoms.pbc = False
    out = Path(args.out) if args.out else default_out
    result = run_md(calc, atoms, steps=args.steps, timestep_fs=args.timestep, temperature_K=args.temperature,
                    thermostat=args.thermostat, friction_per_fs=args.friction, out=out, interval=args.interval,
                    seed=args.seed, progress=not args.no_progress)
    duration = args.steps * args.timestep / 1000.0
    print(f"wrote {out}: {args.steps} steps of {args.timestep} fs ({duration:g} ps), {args.thermostat}, "
          f"every {args.interval} step(s)")
    drift, excursion = result["drift_mev_per_atom_per_ps"], result["max_deviation_mev_per_atom"]
    if args.thermostat == "nve":
        verdict = "OK" if abs(drift) <= args.max_drift else f"WARNING: above {args.max_drift} meV/atom/ps"
        print(f"energy drift: {drift:+.4g} meV/atom/ps, largest excursion {excursion:.4g} meV/atom ({verdict})")
    else:
        print(f"total energy changed by up to {excursion:.4g} meV/atom (Langevin: energy is not conserved; "
              f"drift not checked)")
    return 0
