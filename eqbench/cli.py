"""The ``eqbench`` command.

Training verbs (``fit``, ``validate``, ``test``, ``predict``) are LightningCLI over
:class:`~eqbench.task.AtomisticTask` and :class:`~eqbench.data.datamodule.AtomisticDataModule`
with YAML configs (configs/); the other verbs are plain argparse commands.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys

TRAINING_VERBS = {
    "fit": "train a model (then validate and test its best checkpoint)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split",
    "predict": "predict with a checkpoint",
}
WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}
OTHER_VERBS = {
    "data": "prepare, inspect and generate datasets (prepare | info | generate)",
    "evaluate": "evaluate a trained run (profile: rotor energy profile; sphc: So3krates' SPHC map of a rotor)",
    "sweep": "Optuna ablation sweeps (run | status | worker)",
    "report": "paper-style tables, plots and index.md from a sweep (reports/<study>/)",
    "md": "molecular dynamics with a trained run (ASE; NVE or Langevin)",
    "spectrum": "spectra from MD trajectories (ir: IR from the dipoles)",
    "bench": "speed and memory of the models against their peers (schnetpack, PyG, so3krates-torch)",
}


def _print_overview() -> None:
    from eqbench import __version__

    print(f"eqbench {__version__}: train, compare and ablate equivariant molecular networks\n")
    print("usage: eqbench VERB [options]   (eqbench VERB --help for a verb's options)\n\nverbs:")
    for verb, text in {**TRAINING_VERBS, **OTHER_VERBS}.items():
        print(f"  {verb:<10} {text}")


def main(argv: list[str] | None = None) -> int:
    from eqbench.errors import EqbenchError

    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_overview()
        return 0
    verb = argv[0]
    try:
        if verb in TRAINING_VERBS:
            # LightningCLI reads sys.argv itself; passing args too is only for calls from Python.
            run_training(None if from_command_line else argv)
            return 0
        if verb in OTHER_VERBS:
            return run_command(argv)
    except EqbenchError as err:
        if os.environ.get("EQBENCH_DEBUG"):
            raise
        print(f"eqbench: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk, not the input: full, over a file-size limit or quota, read-only
        if err.errno not in WRITE_ERRNOS or os.environ.get("EQBENCH_DEBUG"):
            raise
        print(f"eqbench: error: could not write {err.filename or 'a file'}: {err.strerror}; free disk space (or raise "
              f"the file-size limit) and run the command again (files are written aside and renamed, so finished "
              f"ones are intact)", file=sys.stderr)
        return 2
    print(f"eqbench: unknown verb {verb!r}\n", file=sys.stderr)
    _print_overview()
    return 2


# ---------------------------------------------------------------------- training verbs
def run_training(argv: list[str] | None):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from eqbench.training_cli import EqbenchCLI

    try:
        return EqbenchCLI(args=argv)
    except SIGTERMException:  # last.ckpt is written (training_cli.SaveOnInterrupt); exit as a terminated process
        print("eqbench: stopped by SIGTERM; checkpoints/last.ckpt of the run directory holds the step reached: "
              "resume with --config RUN/config.yaml --ckpt_path RUN/checkpoints/last.ckpt", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None


# ---------------------------------------------------------------------- other verbs
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eqbench")
    verbs = parser.add_subparsers(dest="verb", required=True)

    data = verbs.add_parser("data", help=OTHER_VERBS["data"])
    data_cmds = data.add_subparsers(dest="command", required=True)
    prepare = data_cmds.add_parser("prepare", help="parse a dataset into an eqbench cache (HDF5)")
    prepare.add_argument("source", help="a published dataset (qm9, md17, rmd17, qm7x, or one molecule such as "
                                        "md17-aspirin) or a file: extxyz, ASE database or cache")
    prepare.add_argument("--out", default=None, help="cache file to write (.h5); required for a file; for a "
                                                     "dataset default <root>/<name>.h5 (a directory for several "
                                                     "molecules)")
    prepare.add_argument("--root", default=None, help="directory of the dataset's published raw files, "
                                                      "downloaded there when absent (default $EQBENCH_DATA/<dataset>)")
    prepare.add_argument("--molecule", nargs="*", default=None, help="md17/rmd17 molecules (default: all)")
    prepare.add_argument("--keep-uncharacterized", action="store_true",
                         help="qm9: keep the 3,054 uncharacterized molecules")
    prepare.add_argument("--no-download", action="store_true", help="use only files already in --root")
    prepare.add_argument("--source", dest="qm9_source", choices=["auto", "tarball", "qm9pack"], default="auto",
                         help="qm9: the figshare tarball (in --root or downloaded), the installed qm9pack wheel "
                              "(pip install 'eqbench[qm9]'; no network needed), or auto: a tarball in --root, "
                              "else qm9pack when installed, else the download (default)")
    prepare.add_argument("--format", choices=["cache", "extxyz", "ase-db"], default=None)
    prepare.add_argument("--units", nargs="*", default=[], metavar="NAME=UNIT",
                         help="unit of each property, e.g. energy=eV forces=eV/Å (required for extxyz)")
    prepare.add_argument("--properties", nargs="*", default=None,
                         help="properties to keep (default: all; for a dataset its standard set, e.g. qm9 with "
                              "A B C mulliken_charges, qm7x with dipole polarizability ...)")
    prepare.add_argument("--distance-unit", default=None, help="unit of positions in the file (Ang or Bohr)")
    info = data_cmds.add_parser("info", help="molecules, atoms, elements, properties, fingerprint of a dataset")
    info.add_argument("path", help="cache file, readable file or bundled name")
    try:
        from eqbench.data.generate import cli as generate_cli
    except ImportError:  # the generator package is part of eqbench; only its engine (tblite) is optional
        generate_cli = None
    if generate_cli is not None:
        generate_cli.add_arguments(data_cmds.add_parser("generate", help="generate rotor/MD reference data "
                                                                         "with GFN2-xTB (needs eqbench[xtb])"))

    evaluate = verbs.add_parser("evaluate", help=OTHER_VERBS["evaluate"])
    eval_cmds = evaluate.add_subparsers(dest="command", required=True)
    from eqbench.sweep import cli as sweep_cli

    sweep_cli.add_arguments(verbs.add_parser("sweep", help=OTHER_VERBS["sweep"]))
    from eqbench.report import cli as report_cli

    report_cli.add_arguments(verbs.add_parser("report", help=OTHER_VERBS["report"]))

    from eqbench.bench import cli as bench_cli

    bench_cli.add_arguments(verbs.add_parser("bench", help=OTHER_VERBS["bench"]))
    from eqbench.evaluate import profile

    profile.add_arguments(eval_cmds.add_parser("profile", help="predict a rotor profile set with a trained run "
                                                               "(MAE, R², PaiNN Fig. 4-style plot)"))
    from eqbench.evaluate import sphc

    sphc.add_arguments(eval_cmds.add_parser("sphc", help="where a trained So3krates puts a rotor's two ends in SPHC "
                                                         "space (So3krates Fig. 3; Eq. 14 weights)"))
    from eqbench.evaluate import md as md_cli
    from eqbench.evaluate import spectrum as spectrum_cli

    md_cli.add_arguments(verbs.add_parser("md", help=OTHER_VERBS["md"], description=OTHER_VERBS["md"]))
    spectrum_cli.add_arguments(verbs.add_parser("spectrum", help=OTHER_VERBS["spectrum"]))
    return parser


def run_command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.verb == "data" and args.command == "prepare":
        return data_prepare(args)
    if args.verb == "data" and args.command == "info":
        return data_info(args.path)
    if args.verb == "data" and args.command == "generate":
        from eqbench.data.generate import cli as generate_cli

        return generate_cli.run(args) or 0
    if args.verb == "sweep":
        from eqbench.sweep import cli as sweep_cli

        return sweep_cli.run(args) or 0
    if args.verb == "report":
        from eqbench.report import cli as report_cli

        return report_cli.run(args)
    if args.verb == "bench":
        from eqbench.bench import cli as bench_cli

        return bench_cli.run(args)
    if args.verb == "evaluate" and args.command == "profile":
        from eqbench.evaluate import profile

        return profile.run(args)
    if args.verb == "evaluate" and args.command == "sphc":
        from eqbench.evaluate import sphc

        return sphc.run(args)
    if args.verb == "md":
        from eqbench.evaluate import md as md_cli

        return md_cli.run(args)
    if args.verb == "spectrum":
        from eqbench.evaluate import spectrum as spectrum_cli

        return spectrum_cli.run(args)
    raise AssertionError(f"unhandled command {args}")  # argparse only lets known commands through


def parse_key_values(pairs: list[str], option: str, form: str = "NAME=VALUE") -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}`` for options such as ``--units`` and ``--slurm-arg``."""
    from eqbench.errors import ConfigError

    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} expects {form}, got {pair!r}")
        result[key] = value
    return result


def data_prepare(args) -> int:
    from pathlib import Path

    from eqbench.data import read, write_cache
    from eqbench.data.readers import FAMILIES, prepare_named
    from eqbench.errors import ConfigError

    family = args.source.partition("-")[0]
    if family in FAMILIES and not Path(args.source).exists():
        paths = prepare_named(args.source, args.root, args.out, args.molecule, download=not args.no_download,
                              keep_uncharacterized=args.keep_uncharacterized, properties=args.properties,
                              source=args.qm9_source)
        import h5py

        for path in paths:
            with h5py.File(path, "r") as f:  # a summary without loading (QM7-X is gigabytes)
                count, fp = len(f["offsets"]) - 1, str(f.attrs["fingerprint"])
            print(f"wrote {path}: {count} molecules, fingerprint {fp}")
        return 0
    dataset_options = [flag for flag, given in (("--root", args.root), ("--molecule", args.molecule),
                                                ("--keep-uncharacterized", args.keep_uncharacterized),
                                                ("--source", args.qm9_source != "auto")) if given]
    if dataset_options:
        raise ConfigError(f"{' '.join(dataset_options)} apply to published datasets ({', '.join(FAMILIES)}), "
                          f"not to the file {args.source}")
    if args.out is None:
        raise ConfigError(f"--out is required to prepare the file {args.source}")
    from eqbench.units import check_units

    units = check_units(parse_key_values(args.units, "--units", "NAME=UNIT"), "--units")
    dataset = read(args.source, format=args.format, units=units, properties=args.properties,
                   distance_unit=args.distance_unit)
    fp = write_cache(dataset, args.out)
    print(f"wrote {args.out}: {len(dataset)} molecules, fingerprint {fp}")
    return 0


def data_info(path: str) -> int:
    import numpy as np
    from ase.data import chemical_symbols

    from eqbench.data import read
    from eqbench.data.cache import fingerprint

    ds = read(path)
    elements, counts = np.unique(ds.z, return_counts=True)
    n_atoms = ds.n_atoms
    print(f"dataset      {ds.source}")
    print(f"molecules    {len(ds)}")
    print(f"atoms        {len(ds.z)} (per molecule {n_atoms.min()}–{n_atoms.max()}, mean {n_atoms.mean():.1f})")
    print("elements     " + ", ".join(f"{chemical_symbols[z]} ({c})" for z, c in zip(elements, counts)))
    print("properties")
    for name, prop in sorted(ds.properties.items()):
        kind = "per atom" if prop.per_atom else "per molecule"
        print(f"  {name:<14} {prop.unit or '-':<14} {kind:<13} shape {tuple(prop.values.shape)} "
              f"{prop.values.dtype}")
    if ds.atomrefs:
        print(f"atom refs    {sorted(ds.atomrefs)}")
    print(f"fingerprint  {ds.fingerprint or fingerprint(ds)}")
    meta = {k: v for k, v in ds.metadata.items() if k in ("method", "command", "source_file", "eqbench_version")}
    for key, value in meta.items():
        print(f"{key:<12} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
