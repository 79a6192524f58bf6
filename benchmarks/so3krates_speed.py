"""So3krates speed: eqbench's training step against so3krates-torch's, and the cost of the non-local switch.

    python benchmarks/so3krates_speed.py [--threads 1] [--steps 10] [--clock cpu|wall] [--skip-peer] [--skip-nonlocal]

1. Training step (energy + force loss, forces by autograd with create_graph, backward, Adam step) on the standard
   batch: 50 QM9-size molecules (the QM9 sample molecules of ../shared/data/qm9 when present, otherwise ASE's G2
   molecules with 9+ atoms, repeated with random rotations). Both models: F 132 (divisible by the 4 heads and
   the 3 degrees, as both models need), 3 layers, degrees {1, 2, 3},
   4 heads, 32 radial basis functions, r_cut 5 Å; eqbench without non-local corrections (so3krates-torch has
   none). so3krates-torch's neighbour list is built by its data pipeline, outside the step; eqbench builds its
   own inside the forward pass, and that time is included. The steps of the two models alternate, and the
   medians are compared.
2. Non-local corrections: the same step for eqbench with and without Eq. 14, at a constant number of atoms per
   batch (default 300) made of zig-zag carbon chains of n atoms (constant neighbour count; all pairs grow as n²).

so3krates-torch is a benchmark peer only; eqbench never imports it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from eqbench.batch import Batch
from eqbench.heads import Energy
from eqbench.models import AtomisticModel, count_parameters, create

QM9_SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "qm9"
HYPER = dict(n_features=132, n_interactions=3, degrees=[1, 2, 3], n_heads=4, n_rbf=32, cutoff=5.0)


def standard_molecules(n_molecules: int = 50, seed: int = 0):
    """ASE Atoms of QM9-size molecules with random rotations."""
    import ase
    from ase.build import molecule
    from ase.collections import g2

    rng = np.random.default_rng(seed)
    pool = []
    files = sorted(QM9_SAMPLES.glob("dsgdb9nsd_*.xyz")) if QM9_SAMPLES.is_dir() else []
    for path in files:
        lines = path.read_text().splitlines()
        n = int(lines[0])
        rows = [line.split() for line in lines[2:2 + n]]
        pos = [[float(x.replace("*^", "e")) for x in row[1:4]] for row in rows]
        pool.append(ase.Atoms([row[0] for row in rows], positions=pos))
    if not pool:
        pool = [molecule(name) for name in g2.names if len(molecule(name)) >= 9]
    out = []
    for k in range(n_molecules):
        atoms = pool[k % len(pool)].copy()
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        atoms.positions = (atoms.positions - atoms.positions.mean(0)) @ (q * np.sign(np.diag(r))).T
        out.append(atoms)
    return out, "QM9 samples" if files else "ASE G2"


def eqbench_step_fn(model, batch: Batch, energy: torch.Tensor, forces: torch.Tensor):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step():
        opt.zero_grad()
        out = model(batch)
        loss = (out["energy"] - energy).pow(2).mean() + (out["forces"] - forces).pow(2).mean()
        loss.backward()
        opt.step()

    return step


def peer_step_fn(atoms_list):
    from so3krates_torch.data.atomic_data import AtomicData
    from so3krates_torch.data.utils import KeySpecification, config_from_atoms
    from so3krates_torch.modules.models import So3krates
    from so3krates_torch.tools import torch_geometric
    from so3krates_torch.tools.utils import AtomicNumberTable

    model = So3krates(r_max=HYPER["cutoff"], num_radial_basis_fn=HYPER["n_rbf"], degrees=HYPER["degrees"],
                      num_features=HYPER["n_features"], num_heads=HYPER["n_heads"],
                      num_layers=HYPER["n_interactions"], energy_regression_dim=HYPER["n_features"],
                      radial_basis_fn="bernstein", message_normalization="avg_num_neighbors", avg_num_neighbors=16.0,
                      dtype=torch.float32)
    table = AtomicNumberTable(list(range(1, 119)))
    data = [AtomicData.from_config(config_from_atoms(a, key_specification=KeySpecification()), z_table=table,
                                   cutoff=HYPER["cutoff"]) for a in atoms_list]
    loader = torch_geometric.dataloader.DataLoader(dataset=data, batch_size=len(data), shuffle=False)
    batch = next(iter(loader)).to_dict()
    n_atoms = batch["positions"].shape[0]
    energy, forces = torch.zeros(len(atoms_list)), torch.zeros(n_atoms, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step():
        opt.zero_grad()
        out = model(batch, training=True, compute_force=True)
        loss = (out["energy"] - energy).pow(2).mean() + (out["forces"] - forces).pow(2).mean()
        loss.backward()
        opt.step()

    return model, step, int(batch["edge_index"].shape[1])


def time_steps(steps: dict, n_steps: int, warmup: int = 2, clock=time.process_time) -> dict[str, float]:
    """Median seconds per step; the functions alternate so that load on the machine hits all alike.

    The default clock is the process's CPU time, which other jobs on a shared machine do not inflate; with
    one thread it equals the wall time on an idle machine (``--clock wall`` measures wall time instead).
    """
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in steps}
    for _ in range(n_steps):
        for k, fn in steps.items():
            t = clock()
            fn()
            times[k].append(clock() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def eqbench_model(**kwargs):
    torch.manual_seed(0)
    rep = create("so3krates", **{**HYPER, **kwargs})
    return AtomisticModel(rep, [Energy(rep.n_features)])


def zigzag_chains(n: int, total: int = 900) -> Batch:
    k = max(total // n, 1)
    i = torch.arange(n, dtype=torch.float32)
    chain = torch.stack([1.26 * i, 0.42 * (i % 2), torch.zeros(n)], dim=1)  # C–C 1.33 Å
    pos = torch.cat([chain + torch.tensor([0.0, 0.0, 10.0 * m]) for m in range(k)])
    counts = torch.full((k,), n)
    return Batch(z=torch.full((n * k,), 6), pos=pos, batch=torch.repeat_interleave(torch.arange(k), counts),
                 n_atoms=counts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="cpu: the process's CPU time (default; robust on a shared machine), wall: wall time")
    parser.add_argument("--nonlocal-atoms", type=int, default=300, help="atoms per batch in the non-local scan")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--skip-nonlocal", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    atoms_list, source = standard_molecules()
    batch = Batch.from_atoms(atoms_list)
    n_atoms = len(batch.z)
    model = eqbench_model(nonlocal_corrections=False)
    steps = {"eqbench": eqbench_step_fn(model, batch, torch.zeros(batch.n_molecules), torch.zeros(n_atoms, 3))}
    print(f"standard batch: 50 molecules ({source}), {n_atoms} atoms; threads {args.threads}")
    print(f"eqbench So3krates parameters (with F → F/2 → 1 head): {count_parameters(model):,}")
    if not args.skip_peer:
        try:
            peer, steps["so3krates-torch"], n_edges = peer_step_fn(atoms_list)
        except ImportError as err:
            print(f"so3krates-torch not installed ({err}); skipping the comparison")
        else:
            torch.set_default_dtype(torch.float32)  # so3krates-torch sets the global default dtype
            print(f"so3krates-torch So3krates parameters: {sum(p.numel() for p in peer.parameters()):,}; "
                  f"{n_edges} edges at {HYPER['cutoff']} Å")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    medians = time_steps(steps, args.steps, clock=clock)
    for k, v in medians.items():
        print(f"  {k:16s} training step {1e3 * v:8.1f} ms {args.clock} time (median of {args.steps})")
    if "so3krates-torch" in medians:
        print(f"  speed ratio so3krates-torch / eqbench: {medians['so3krates-torch'] / medians['eqbench']:.2f}×")

    if not args.skip_nonlocal:
        print(f"\nnon-local corrections (Eq. 14), ~{args.nonlocal_atoms} atoms per batch of carbon chains of n atoms "
              f"({args.clock} time per training step):")
        print("| n atoms per molecule | molecules | local step (ms) | non-local step (ms) | ratio |")
        print("| --- | --- | --- | --- | --- |")
        for n in (10, 20, 50, 100, 300):
            chains = zigzag_chains(n, args.nonlocal_atoms)
            targets = (torch.zeros(chains.n_molecules), torch.zeros(len(chains.z), 3))
            pair = {"local": eqbench_step_fn(eqbench_model(nonlocal_corrections=False), chains, *targets),
                    "nonlocal": eqbench_step_fn(eqbench_model(nonlocal_corrections=True), chains, *targets)}
            t = time_steps(pair, 3, warmup=1, clock=clock)
            print(f"| {n} | {chains.n_molecules} | {1e3 * t['local']:.0f} | {1e3 * t['nonlocal']:.0f} | "
                  f"{t['nonlocal'] / t['local']:.2f} |")
    if math.isnan(sum(medians.values())):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
