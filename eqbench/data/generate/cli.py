"""``eqbench data generate KIND --out PATH ...``: the command-line face of the generators.

``add_arguments(parser)`` adds one sub-command per kind (ferrocene, cumulene, md,
ferrocene-profile, cumulene-profile); ``run(args)`` runs it and prints a summary. The command
recorded in the file is the canonical one — every option spelled out with its value — so it
reproduces the file even if defaults change later. ``--workers`` and ``--chunk-size`` never
change the result.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from eqbench.data.generate.cumulene import DEFAULT_SIZES

KINDS = ("ferrocene", "cumulene", "md", "ferrocene-profile", "cumulene-profile")
_FLAGS: dict[str, list[tuple[str, str, bool]]] = {}  # kind -> (flag, dest, is_switch), for the canonical command


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _add(parser: argparse.ArgumentParser, kind: str, flag: str, **kwargs) -> None:
    action = parser.add_argument(flag, **kwargs)
    _FLAGS.setdefault(kind, []).append((flag, action.dest, kwargs.get("action") == "store_true"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands of ``eqbench data generate``."""
    sub = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    helps = {
        "ferrocene": "1,1'-difluoroferrocene, ring rotation θ uniform + 300 K fluctuations (PaiNN §5.3.2)",
        "cumulene": "cumulenes H2C=(C=)n-2CH2, terminal twist φ uniform + 300 K fluctuations (So3krates §4)",
        "md": "Langevin MD at 500 K (as MD17) of ethanol, aspirin or any xyz file",
        "ferrocene-profile": "rigid ring-rotation scan of the relaxed ferrocene (PaiNN Fig. 4)",
        "cumulene-profile": "rigid terminal-twist scans of the relaxed cumulenes (So3krates Fig. 2)",
    }
    for kind in KINDS:
        _FLAGS[kind] = []
        p = sub.add_parser(kind, help=helps[kind], description=helps[kind] + ". Energies in kcal/mol, forces in "
                           "kcal/mol/Å, from GFN2-xTB (tblite; install eqbench[xtb]).")
        _add(p, kind, "--out", required=True, help="output HDF5 cache; work goes to OUT.parts/ until done")
        if kind in ("ferrocene", "cumulene", "md"):
            default_n = {"ferrocene": 12_000, "cumulene": 1200, "md": 1000}[kind]
            _add(p, kind, "--n", type=int, default=default_n,
                 help=f"structures{' per chain length' if kind == 'cumulene' else ''} (default {default_n})")
            _add(p, kind, "--seed", type=int, default=0, help="random seed (default 0)")
        if kind in ("cumulene", "cumulene-profile"):
            _add(p, kind, "--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                 help="carbon counts n of H2C=(C=)n-2CH2 (default 3 4 5 7 9)")
        if kind in ("ferrocene", "cumulene"):
            _add(p, kind, "--temperature", type=float, default=300.0, help="sampling temperature, K (default 300)")
        if kind.endswith("-profile"):
            _add(p, kind, "--step", type=float, default=5.0, help="scan step in degrees (default 5)")
        if kind == "md":
            _add(p, kind, "--molecule", default="ethanol",
                 help="ethanol, aspirin or a structure file (default ethanol)")
            _add(p, kind, "--temperature", type=float, default=500.0, help="K (default 500, as MD17)")
            _add(p, kind, "--timestep", type=float, default=0.5, help="fs (default 0.5)")
            _add(p, kind, "--friction", type=float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
            _add(p, kind, "--stride", type=int, default=10, help="MD steps between stored frames (default 10)")
            _add(p, kind, "--equilibration", type=int, default=1000, help="MD steps before the first frame "
                 "(default 1000)")
            _add(p, kind, "--trajectories", type=int, default=1, help="independent trajectories, run in parallel "
                 "(default 1)")
            _add(p, kind, "--charge", type=int, default=0, help="total charge (default 0)")
            _add(p, kind, "--multiplicity", type=int, default=1, help="spin multiplicity 2S+1 (default 1)")
        _add(p, kind, "--accuracy", type=float, default=1.0, help="tblite numerical accuracy (default 1.0)")
        _add(p, kind, "--electronic-temperature", type=float, default=300.0,
             help="Fermi smearing temperature, K (default 300; it changes barriers: C9H4 19.5 kcal/mol at 300 K, "
                  "7.2 at 3000 K)")
        _add(p, kind, "--max-iterations", type=int, default=250, help="SCF iterations before a retry (default 250)")
        if not kind.endswith("-profile"):
            _add(p, kind, "--chunk-size", type=int, default=100,
                 help="structures per saved chunk (default 100); does not change the result")
        _add(p, kind, "--workers", type=int, default=_default_workers(),
             help="worker processes (default: all cores); does not change the result")
        p.add_argument("--keep-parts", action="store_true", help="keep OUT.parts/ after writing OUT")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")


def canonical_command(args: argparse.Namespace) -> str:
    """The command as run, with every option spelled out (defaults included)."""
    words = ["eqbench", "data", "generate", args.kind]
    for flag, dest, switch in _FLAGS.get(args.kind, []):
        value = getattr(args, dest)
        if switch:
            words += [flag] if value else []
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from eqbench.data.generate.engine import XTBSettings

    settings = XTBSettings(accuracy=args.accuracy, electronic_temperature=args.electronic_temperature,
                           max_iterations=args.max_iterations, charge=getattr(args, "charge", 0),
                           multiplicity=getattr(args, "multiplicity", 1))
    common = {"workers": args.workers, "settings": settings, "progress": not args.no_progress,
              "command": canonical_command(args), "keep_parts": args.keep_parts}
    if args.kind == "ferrocene":
        from eqbench.data.generate.ferrocene import generate_ferrocene

        result = generate_ferrocene(args.out, n=args.n, seed=args.seed, temperature=args.temperature,
                                    chunk_size=args.chunk_size, **common)
    elif args.kind == "cumulene":
        from eqbench.data.generate.cumulene import generate_cumulene

        result = generate_cumulene(args.out, n=args.n, sizes=args.sizes, seed=args.seed,
                                   temperature=args.temperature, chunk_size=args.chunk_size, **common)
    elif args.kind == "md":
        from eqbench.data.generate.md import generate_md

        result = generate_md(args.out, molecule=args.molecule, n=args.n, seed=args.seed,
                             temperature=args.temperature, timestep=args.timestep, friction=args.friction,
                             stride=args.stride, equilibration=args.equilibration, trajectories=args.trajectories,
                             chunk_size=args.chunk_size, **common)
    elif args.kind == "ferrocene-profile":
        from eqbench.data.generate.ferrocene import generate_ferrocene_profile

        result = generate_ferrocene_profile(args.out, step=args.step, **common)
    else:
        from eqbench.data.generate.cumulene import generate_cumulene_profile

        result = generate_cumulene_profile(args.out, sizes=args.sizes, step=args.step, **common)
    print(result.summary(), file=sys.stderr)
    return 0
