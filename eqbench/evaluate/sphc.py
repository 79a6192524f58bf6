"""Where a trained So3krates puts the two ends of a rotor in SPHC space (So3krates Fig. 3).

The non-local corrections of Eq. 14 let atom i hear atom j when the two are close in SPHC space, however far
apart they are in R³: per molecule of n atoms, X_ij = ‖χ_i − χ_j‖, χ̃_ij = softmax_j(X_ij) over the row
(j = i included) and the pair enters the second sum of Eq. 14 with weight φ_χ̃cut(χ̃_ij) = u(n χ̃_ij), which
is 0 for χ̃_ij ≥ 1/n (u: DimeNet's envelope, as in :mod:`eqbench.models.so3krates`). The paper's Fig. 3 shows
that after training the hydrogens at opposite ends of C9H4 sit close together in SPHC space, which is how the
rotors see each other; at initialisation they do not.

For every structure of a rotor profile and every layer's input χ (χ⁰ of Eq. 11, then the output of each
layer but the last, i.e. what that layer's Eq. 14 sees), :func:`sphc_statistics` measures

- ``opposite_distance``: mean X_ij over hydrogens i, j at opposite ends (``same_distance``: same end);
- ``relative_opposite_distance``: that mean over the mean X_ij of all pairs i ≠ j (< 1: closer than typical);
- ``opposite_weight``: mean φ_χ̃cut(χ̃_ij) over ordered opposite-end pairs, and ``opposite_in_neighbourhood``,
  the fraction of them with a non-zero weight (in N_χ(i)).

:func:`run_evaluate_sphc` (``eqbench evaluate sphc RUN_DIR``) does this for a trained run and for the same
model freshly initialised with the run's seed (the run's own initial weights are not stored), and draws the
Fig. 3 projection: the SPHCs entering the last layer on their first two principal components, carbons grey and the two
ends' hydrogens green and red, initialised against trained.

The two ends are told apart geometrically (:func:`rotor_ends`): hydrogens are split by the side of the
heavy-atom chain's principal axis they lie on (for a cumulene, the two CH₂ groups).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from eqbench.data.dataset import AtomisticDataset
from eqbench.errors import ConfigError, DataError
from eqbench.evaluate.profile import parse_subset, run_profile

HYDROGEN = 1
LAYERS_KEY = "layers"


# ------------------------------------------------------------------------------------------------ geometry
def rotor_ends(numbers: np.ndarray, positions: np.ndarray, where: str = "structure") -> tuple[np.ndarray, np.ndarray]:
    """Indices of the hydrogens on either end of the heavy-atom chain (split along its principal axis)."""
    numbers, positions = np.asarray(numbers), np.asarray(positions, dtype=float)
    heavy = positions[numbers != HYDROGEN]
    hydrogens = np.flatnonzero(numbers == HYDROGEN)
    if len(heavy) < 2 or len(hydrogens) < 2:
        raise DataError(f"{where}: needs at least two heavy atoms and two hydrogens to find a rotor's ends "
                        f"(has {len(heavy)} and {len(hydrogens)}); give a rotor structure such as a cumulene")
    centre = heavy.mean(axis=0)
    axis = np.linalg.svd(heavy - centre, full_matrices=False)[2][0]
    side = (positions[hydrogens] - centre) @ axis
    ends = hydrogens[side < 0], hydrogens[side > 0]
    if not len(ends[0]) or not len(ends[1]):
        raise DataError(f"{where}: all hydrogens lie on one side of the heavy-atom axis; this is not a two-ended "
                        f"rotor")
    return ends


# ------------------------------------------------------------------------------------------------ statistics
def sphc_weights(chi: torch.Tensor, envelope: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, φ_χ̃cut(χ̃)) of one molecule's SPHCs ``chi`` [n, d], both [n, n]; the diagonal weight is set to 0."""
    n = chi.shape[0]
    x = torch.cdist(chi[None], chi[None])[0]
    x.fill_diagonal_(0.0)
    weight = envelope(torch.softmax(x, dim=1) * n)
    weight.fill_diagonal_(0.0)
    return x, weight


def sphc_statistics(chi: torch.Tensor, ends: tuple[np.ndarray, np.ndarray], envelope: torch.nn.Module) -> dict:
    """Distances and Eq. 14 weights between the two ends' hydrogens for one molecule (module docstring)."""
    x, weight = sphc_weights(chi, envelope)
    a, b = (torch.as_tensor(e, dtype=torch.long) for e in ends)
    n = chi.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    opposite = torch.cat([x[a][:, b].reshape(-1), x[b][:, a].reshape(-1)])
    same = [x[e][:, e][~torch.eye(len(e), dtype=torch.bool)] for e in (a, b) if len(e) > 1]
    w_opposite = torch.cat([weight[a][:, b].reshape(-1), weight[b][:, a].reshape(-1)])
    mean_all = float(x[off_diagonal].mean())
    return {
        "opposite_distance": float(opposite.mean()),
        "same_distance": float(torch.cat(same).mean()) if same else float("nan"),
        "mean_distance": mean_all,
        "relative_opposite_distance": float(opposite.mean()) / mean_all if mean_all > 0 else float("nan"),
        "opposite_weight": float(w_opposite.mean()),
        "opposite_in_neighbourhood": float((w_opposite > 0).to(torch.float64).mean()),
    }


def sphc_history(model: torch.nn.Module, batch) -> list[torch.Tensor]:
    """χ of a one-molecule batch entering each layer ([n, d] each; the last layer's output feeds no Eq. 14)."""
    representation = getattr(model, "representation", model)
    if not hasattr(representation, "chi_envelope") or not hasattr(representation, "run"):
        raise ConfigError(f"evaluate sphc: the model is {type(representation).__name__}; SPHC maps need a So3krates "
                          "run (eqbench.models.So3krates)")
    parameter = next(representation.parameters())
    with torch.no_grad():
        _, history = representation.run(batch.to(parameter.device, parameter.dtype))
    return [chi.detach().to("cpu", torch.float64) for chi in history[:-1]]


def analyse(model: torch.nn.Module, dataset: AtomisticDataset) -> dict:
    """The statistics of the χ entering each layer (``layers``, t = 0 … n_l − 1), averaged over the structures
    of ``dataset`` (one molecule each)."""
    representation = getattr(model, "representation", model)
    model.eval()
    per_structure = []
    for index in range(len(dataset)):
        batch = dataset.__getitems__([index])
        ends = rotor_ends(batch.z.numpy(), batch.pos.numpy(), f"{dataset.source}[{index}]")
        per_structure.append([sphc_statistics(chi, ends, representation.chi_envelope)
                              for chi in sphc_history(model, batch)])
    layers = [{key: float(np.mean([s[t][key] for s in per_structure])) for key in per_structure[0][t]}
              for t in range(len(per_structure[0]))]
    return {LAYERS_KEY: layers, "n_structures": len(dataset),
            "nonlocal_corrections": bool(getattr(representation, "nonlocal_corrections", False))}


# ------------------------------------------------------------------------------------------------ figure
def plot_projection(maps: dict[str, np.ndarray], numbers: np.ndarray,
                    ends: tuple[np.ndarray, np.ndarray], path: str | Path, title: str = "") -> list[Path]:
    """Fig. 3: each map's SPHCs [n, d] on their first two principal components, one panel per map."""
    from eqbench.evaluate.plots import new_figure, save

    fig, axes = new_figure(len(maps), width=3.6, height=3.4)
    for ax, (label, chi) in zip(axes, maps.items()):
        centred = chi - chi.mean(axis=0)
        components = np.linalg.svd(centred, full_matrices=False)[2][:2]
        xy = centred @ components.T
        if xy.shape[1] < 2:
            xy = np.column_stack([xy, np.zeros(len(xy))])
        for group, colour, name in ((np.flatnonzero(numbers != HYDROGEN), "0.55", "heavy atoms"),
                                    (ends[0], "tab:green", "H, one end"), (ends[1], "tab:red", "H, other end")):
            ax.scatter(xy[group, 0], xy[group, 1], c=colour, s=40, label=name, edgecolors="k", linewidths=0.4)
        ax.set_title(label)
        ax.set_xlabel("SPHC PC 1")
        ax.set_ylabel("SPHC PC 2")
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save(fig, path, formats=("png",))


# ------------------------------------------------------------------------------------------------ CLI
def run_evaluate_sphc(run_dir: str | Path, profile: str | None = None, subset: dict[str, list] | None = None,
                      out_dir: str | Path | None = None, checkpoint: str = "best") -> dict:
    """``eqbench evaluate sphc RUN_DIR``: SPHC statistics of a trained So3krates run and of its initialisation."""
    from eqbench.tracking import build_task, load_task, run_seed

    dataset, _ = run_profile(run_dir, profile, subset=subset)
    run_dir = Path(run_dir)
    trained = load_task(run_dir, checkpoint).model
    seed = run_seed(run_dir)
    torch.manual_seed(seed)
    initial = build_task(run_dir).model.eval()
    result = {"run_dir": str(run_dir), "profile": dataset.source, "checkpoint": checkpoint, "seed": seed,
              "initialised": analyse(initial, dataset), "trained": analyse(trained, dataset)}
    out = Path(out_dir or run_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "sphc.json"
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(json_path)
    middle = len(dataset) // 2  # one structure of the scan, as in Fig. 3
    batch = dataset.__getitems__([middle])
    numbers = batch.z.numpy()
    ends = rotor_ends(numbers, batch.pos.numpy(), f"{dataset.source}[{middle}]")
    # χ entering the last layer: the last SPHCs that Eq. 14 uses
    maps = {name: sphc_history(model, batch)[-1].numpy() for name, model in (("initialised", initial),
                                                                                ("trained", trained))}
    plot_projection(maps, numbers, ends, out / "sphc.png",
                    title=f"SPHCs entering the last layer, {Path(dataset.source).stem}[{middle}]")
    return result


def summary_table(results: dict[str, dict]) -> str:
    """Markdown table, one row per run: profile R² and the last layer's opposite-end statistics."""
    lines = ["| run | profile R² | opposite-end H distance / mean distance | Eq. 14 weight, opposite-end pairs | "
             "opposite-end pairs in N_χ |", "| --- | --- | --- | --- | --- |"]
    for name, result in results.items():
        profile = Path(result["run_dir"]) / "profile.json"
        r2 = json.loads(profile.read_text()).get("r2") if profile.is_file() else None
        i, t = result["initialised"][LAYERS_KEY][-1], result["trained"][LAYERS_KEY][-1]
        cells = [f"{i[k]:.{d}f} → {t[k]:.{d}f}" for k, d in (("relative_opposite_distance", 2),
                                                            ("opposite_weight", 3), ("opposite_in_neighbourhood", 2))]
        lines.append(f"| {name} | {'—' if r2 is None else f'{r2:.3f}'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``eqbench evaluate sphc``."""
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories of finished So3krates runs")
    parser.add_argument("--profile", help="rotor structures: cumulene-profile or a file (default: from the run's "
                                          "config)")
    parser.add_argument("--subset", nargs="+", metavar="KEY=VALUE",
                        help="profile points to use, e.g. n_carbon=9 (default: the run's data subset)")
    parser.add_argument("--checkpoint", default="best", help="best (default) or last")
    parser.add_argument("--out", help="directory for sphc.json and sphc.png (default: RUN_DIR); with several runs, "
                                      "one subdirectory per run and the summary sphc.md")


def run(args: argparse.Namespace) -> int:
    several = len(args.run_dirs) > 1
    results = {}
    for run_dir in args.run_dirs:
        name = Path(run_dir).name
        out = Path(args.out) / name if several and args.out else Path(args.out or run_dir)
        result = results[name] = run_evaluate_sphc(run_dir, args.profile, parse_subset(args.subset), out,
                                                   args.checkpoint)
        for state in ("initialised", "trained"):
            last = result[state][LAYERS_KEY][-1]
            print(f"{name} {state}: opposite-end hydrogens at {last['relative_opposite_distance']:.3f} × the mean "
                  f"SPHC distance entering the last layer; Eq. 14 weight per layer "
                  + ", ".join(f"{s['opposite_weight']:.3f}" for s in result[state][LAYERS_KEY]))
        print(f"wrote sphc.json and sphc.png to {out}")
    if args.out:
        table = Path(args.out) / "sphc.md"
        tmp = table.with_name(table.name + ".tmp")
        tmp.write_text("Last layer's input SPHCs, initialised → trained (eqbench evaluate sphc).\n\n"
                       + summary_table(results))
        tmp.replace(table)
        print(f"wrote {table}")
    return 0
