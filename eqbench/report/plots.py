"""Plots for runs and reports (matplotlib, Agg without pyplot; PNG and SVG).

- :func:`plot_profiles`, :func:`plot_profile_panels`: rotor energy profiles (from
  :mod:`eqbench.evaluate.plots`, where evaluations draw them).
- :func:`plot_metric_vs_factor`: a metric against a factor (e.g. force MAE against r_cut), one line
  per series, error bars = standard deviation over seeds.
- :func:`plot_learning_curves`: a per-epoch metric from each run's metrics.csv.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from eqbench.evaluate.plots import COLORS, new_figure, plot_profile_panels, plot_profiles, save  # noqa: F401
from eqbench.report.tables import mean_std


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
