"""``eqbench report SPEC``: tables, plots and index.md from a sweep (arguments and dispatch)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

DEFAULT_REPORTS_DIR = "reports"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from eqbench.sweep.cli import DEFAULT_RUNS_DIR

    parser.add_argument("spec", help="sweep spec (YAML in sweeps/); its report: section declares the tables and plots")
    parser.add_argument("--profile", help="the spec's profile the sweep ran with (e.g. cpu)")
    parser.add_argument("--format", default="md,tex,html",
                        help="table formats, comma-separated: md, tex, html (default all three)")
    parser.add_argument("--out", help=f"report folder (default {DEFAULT_REPORTS_DIR}/<study>, e.g. "
                                      f"reports/painn_ablation-cpu)")
    parser.add_argument("--storage", help="Optuna RDB URL of the study (default as `eqbench sweep run`)")
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help=f"where the sweep's runs are "
                                                                     f"(default {DEFAULT_RUNS_DIR})")
    parser.add_argument("--wandb", choices=["offline", "online", "disabled"], default="offline",
                        help="log the tables and plots to a W&B report run (default offline: `wandb sync` later)")
    parser.add_argument("--wandb-project", default="eqbench")


def run(args: argparse.Namespace) -> int:
    from eqbench.report.build import build_report, print_report
    from eqbench.report.wandb_log import log_report
    from eqbench.sweep.spec import load_spec
    from eqbench.sweep.study import open_existing_study, resolve_storage_url

    spec = load_spec(args.spec, args.profile)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    study = open_existing_study(spec, resolve_storage_url(spec, args.storage, args.runs_dir))
    out = Path(args.out) if args.out else Path(DEFAULT_REPORTS_DIR) / spec.study_name
    command = "eqbench report " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["report"] \
        else f"eqbench report {spec.path}" + (f" --profile {spec.profile}" if spec.profile else "")
    report = build_report(spec, study, out, formats, command=command)
    log_report(report, mode=args.wandb, project=args.wandb_project,
               directory=Path(args.runs_dir) / spec.study_name / "report",
               config={"spec": str(spec.path), "profile": spec.profile, "study": spec.study_name,
                       **{f"summary/{k}": v for k, v in report.summary.items() if not isinstance(v, (dict, list))}})
    print_report(report)
    return 0
