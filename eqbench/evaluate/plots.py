"""Figures of evaluations: rotor energy profiles (matplotlib, Agg without pyplot; PNG and SVG).

- :func:`plot_profiles`: rotor energy profiles, reference against one or more models, one panel per
  molecule; :func:`plot_profile_panels`: one panel per setting (e.g. per cutoff, PaiNN Fig. 4).
- :func:`new_figure`, :func:`save`: the figure helpers every eqbench plot uses (reports too).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


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

    ``results`` maps a model label to the dict :func:`eqbench.evaluate.profile.evaluate_profile` returns.
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
