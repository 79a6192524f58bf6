"""Plots for runs and reports (matplotlib, Agg without pyplot; PNG and SVG).

- :func:`plot_profiles`: rotor energy profiles, reference against one or more models, one panel per
  molecule; :func:`plot_profile_panels`: one panel per setting (e.g. per cutoff, PaiNN Fig. 4).
- :func:`plot_metric_vs_factor`: a metric against a factor (e.g. force MAE against r_cut), one line
  per series, error bars = standard deviation over seeds.
- :func:`plot_learning_curves`: a per-epoch metric from each run's metrics.csv.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eqbench.report.tables import mean_std


def new_figure(n_panels: int = 1, width: float = 4.2, height: float = 3.4) -> tuple[Figure, list]:
    ncols = max(1, min(n_panels, 3))
    nrows = -(-max(n_panels, 1) // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)  # no global backend switch, no display needed
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save(fig: Figure, path: str | Path, formats=("png", "svg")) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (``path``'s own suffix is replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        target = path.with_suffix("." + fmt)
        tmp = target.with_name(target.stem + ".tmp." + fmt)
        # Fixed SVG ids and no date: the same figure gives the same file, so committed reports only
        # change where the results do.
        with matplotlib.rc_context({"svg.hashsalt": "eqbench"}):
            fig.savefig(tmp, dpi=120, metadata={"Date": None} if fmt in ("svg", "pdf") else None)
        tmp.replace(target)
        out.append(target)
    return out


def plot_profiles(results: dict[str, dict], path: str | Path, formats=("png",)) -> list[Path]:
    """Reference profile and each model's prediction, one panel per molecule (profile group).

    ``results`` maps a model label to the dict :func:`eqbench.data.profile.evaluate_profile` returns.
    Curves are shown as the papers compare them: the reference's minimum at 0 and each prediction
    shifted so that its mean equals the reference's (the absolute offset is not compared).
    """
    first = next(iter(results.values()))
    groups = list(first["groups"])
    fig, axes = new_figure(len(groups))
    for ax, name in zip(axes, groups):
        _draw_profile(ax, results, name, title=name if name != "all" else None)
    axes[0].legend(fontsize=7, frameon=True, loc="best")
    return save(fig, path, formats)


def plot_profile_panels(panels: dict[str, dict[str, dict]], path: str | Path, formats=("png", "svg")) -> list[Path]:
    """One panel per setting (e.g. per cutoff, as PaiNN Fig. 4), each with the reference and every
    model's prediction of the first profile group; ``panels`` maps a panel title to ``{label: result}``."""
    fig, axes = new_figure(len(panels))
    for ax, (title, results) in zip(axes, panels.items()):
        group = next(iter(next(iter(results.values()))["groups"]))
        _draw_profile(ax, results, group, title=title, always_label=True)
        ax.legend(fontsize=7, frameon=True, loc="best")
    return save(fig, path, formats)


COLORS = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown"]


def _draw_profile(ax, results: dict[str, dict], group: str, title: str | None = None,
                  always_label: bool = False) -> None:
    first = next(iter(results.values()))
    period = first.get("angle_period")
    ref_group = first["groups"][group]
    angle, ref = (np.asarray(ref_group[k], dtype=float) for k in ("angle", "reference"))
    close = bool(period) and len(angle) and angle[0] == 0 and angle[-1] < period
    x = np.append(angle, period) if close else angle
    offset = ref.min()
    ax.plot(x, _closed(ref, close) - offset, color="black", lw=2, label="reference (GFN2-xTB)")
    for k, (label, result) in enumerate(results.items()):
        g = result["groups"].get(group)
        if g is None:
            continue
        pred = np.asarray(g["prediction"], dtype=float)
        shown = _closed(pred, close) - pred.mean() + ref.mean() - offset
        text = f"{label} (R² {g['r2']:.2f})" if always_label or len(results) > 1 else \
            f"model (MAE {g['mae']:.3g}, R² {g['r2']:.2f})"
        ax.plot(x, shown, color=COLORS[k % len(COLORS)], ls="--", marker="o", ms=2.5, label=text)
    ax.set_xlabel(f"{first['angle_key']} ({first.get('angle_unit') or 'deg'})")
    ax.set_ylabel(f"E − min E_ref, means aligned ({first['energy_unit']})")
    if title:
        ax.set_title(title, fontsize=9)
    if period:
        ax.set_xticks(np.linspace(0, period, 5))


def _closed(values: np.ndarray, close: bool) -> np.ndarray:
    # A periodic scan 0…355° is drawn up to 360° by repeating its first point.
    return np.append(values, values[0]) if close else values


def plot_metric_vs_factor(series: dict[str, dict[float, list[float]]], xlabel: str, ylabel: str,
                          path: str | Path, formats=("png", "svg")) -> list[Path]:
    """One line per series: x → values over seeds, drawn as mean with ± std error bars."""
    fig, (ax,) = new_figure(1)
    for label, points in series.items():
        xs = sorted(points)
        stats = [mean_std(points[x]) for x in xs]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s or 0.0 for _, s in stats], marker="o", capsize=3,
                    label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return save(fig, path, formats)


def read_learning_curve(run_dir: str | Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of ``metric`` from a run's metrics.csv, the last value logged for each epoch
    during training (rows without the smoothed validation loss come from post-fit evaluation)."""
    path = Path(run_dir) / "metrics.csv"
    by_epoch: dict[int, float] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get(metric) and (not metric.startswith("val_") or row.get("val_loss_smoothed")):
                by_epoch[int(row["epoch"])] = float(row[metric])
    epochs = np.array(sorted(by_epoch))
    return epochs, np.array([by_epoch[e] for e in epochs])


def plot_learning_curves(runs: dict[str, str | Path], metric: str, path: str | Path, ylabel: str | None = None,
                         log: bool = True, formats=("png", "svg")) -> list[Path]:
    fig, (ax,) = new_figure(1)
    for label, run_dir in runs.items():
        epochs, values = read_learning_curve(run_dir, metric)
        ax.plot(epochs, values, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or metric)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return save(fig, path, formats)
