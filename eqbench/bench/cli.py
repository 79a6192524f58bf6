"""``eqbench bench``: arguments and the command."""

from __future__ import annotations

import argparse
import shlex
import sys

from eqbench.bench.registry import BENCH_MODELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Time forward, energy+forces and a training step of eqbench's models against their peers "
                          "(schnetpack, PyTorch Geometric, so3krates-torch, when installed) on the same seeded "
                          "batch of QM9-size molecules, in one process; peak memory and parameters too.")
    parser.add_argument("--models", nargs="+", default=["schnet", "painn"], metavar="NAME",
                        help=f"models to benchmark (default: schnet painn; known: {', '.join(BENCH_MODELS)})")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[50], metavar="N",
                        help="molecules per batch, one case each (default: 50)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per operation (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default: 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true",
                        help="time eqbench's models under torch.compile (the force-loss training step cannot be "
                             "compiled: no double backward)")
    parser.add_argument("--no-peers", action="store_true", help="eqbench's models only")
    parser.add_argument("--peers", nargs="+", default=None, metavar="PEER",
                        help="only these peers (schnetpack, pyg, so3krates-torch)")
    parser.add_argument("--ops", nargs="+", default=None, metavar="OP",
                        help="operations (forward energy_forces train_step; default: all)")
    parser.add_argument("--scaling", nargs="*", type=int, default=None, metavar="ATOMS",
                        help="also time one water cluster and one periodic water box per size (atoms; without "
                             "values: 12 24 48 96 192 384 768 1536 2000)")
    parser.add_argument("--scaling-models", nargs="+", default=None, metavar="NAME",
                        help="time the --scaling structures for these models only (default: every model)")
    parser.add_argument("--assembly", action="store_true",
                        help="also measure batch assembly (QM9-size molecules/s from a cache, through the DataLoader)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--one-process", action="store_true",
                        help="time every model in this process (default: each model in a fresh process, so that "
                             "its numbers do not depend on the models timed before it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, metavar="FILE", help="write the JSON record here")
    parser.add_argument("--report", default=None, metavar="DIR", help="write index.md, bench.json and plots here")
    parser.add_argument("--notes", default="", help="a paragraph for the report (e.g. how loaded the machine was)")


def run(args: argparse.Namespace) -> int:
    import torch

    from eqbench.bench.report import table, write_json, write_report
    from eqbench.bench.runner import OPS, run_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    scaling = args.scaling
    if scaling is not None and not scaling:
        scaling = [12, 24, 48, 96, 192, 384, 768, 1536, 2000]
    record = run_bench(models=args.models, batch_sizes=args.batch_sizes, repeats=args.repeats, warmup=args.warmup,
                       device=args.device, dtype=getattr(torch, args.dtype), compile=args.compile,
                       peers=not args.no_peers, only_peers=args.peers, ops=args.ops or OPS, seed=args.seed,
                       memory=not args.no_memory, scaling=scaling or (), scaling_models=args.scaling_models,
                       isolate=not args.one_process,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.assembly:
        from eqbench.bench.assembly import batch_assembly

        record["batch_assembly"] = batch_assembly(seed=args.seed)
    command = "eqbench bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["bench"] \
        else "eqbench bench"
    record["command"] = command
    print(table(record))
    if record.get("batch_assembly"):
        print(f"\nbatch assembly: {record['batch_assembly']['molecules_per_s']:,.0f} molecules/s")
    if args.json:
        write_json(record, args.json)
    if args.report:
        path = write_report(record, args.report, command, args.notes)
        print(f"\nreport: {path}")
    return 0
