"""Rotor energy profiles: how well a model reproduces E(θ) or E(φ) of a rigid scan.

PaiNN Fig. 4 (ferrocene, §5.3.2) and So3krates Fig. 2 (cumulene, §4) judge models by the
energy profile of a rigid torsion scan: a model that cannot resolve the torsion predicts a
flat line. Only the shape matters (the profile's absolute offset is not what is tested), so
reference and prediction are each centred on their own mean before comparing:

    MAE = mean |ê − r̂|,   R² = 1 − Σ(ê − r̂)² / Σ r̂²,   r̂ = r − mean(r), ê = e − mean(e).

A perfect model has MAE 0 and R² 1; a model that ignores the angle (a constant) has R² 0.
Profiles with several molecules (cumulene: one scan per ``n_carbon``) are centred per
molecule; the overall numbers pool the centred residuals of all of them.

Outputs: ``profile.json`` (metrics and curves) and ``profile.png`` in a run directory, from
:func:`write_profile_report`; :class:`ProfileEvaluation` does this at the end of testing, and
``eqbench evaluate profile RUN_DIR`` (:func:`run_evaluate_profile`) for a finished run.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from eqbench.data.dataset import AtomisticDataset
from eqbench.errors import ConfigError, DataError

PROFILE_OF_DATASET = {"ferrocene": "ferrocene-profile", "cumulene": "cumulene-profile"}


# ---------------------------------------------------------------------------------------------- evaluation
def load_profile(profile: str | Path) -> AtomisticDataset:
    """A profile set from a bundled name (``ferrocene-profile``, ``cumulene-profile``) or a file."""
    from eqbench.data.readers import read

    return read(profile)


def select_profile(dataset: AtomisticDataset, selection: dict[str, list] | None, name: str) -> AtomisticDataset:
    """The profile points whose properties take the given values, e.g. ``{"n_carbon": [9]}`` (all without)."""
    if not selection:
        return dataset
    keep = np.ones(len(dataset), dtype=bool)
    for key, allowed in selection.items():
        dataset.require([key])
        keep &= np.isin(dataset.properties[key].values, allowed)
    if not keep.any():
        raise ConfigError(f"profile {name!r}: subset {selection} selects no profile points")
    return dataset.subset(np.flatnonzero(keep))


def profile_subset(data_subset: dict[str, list] | None, dataset: AtomisticDataset) -> dict[str, list]:
    """The part of a training set's ``subset`` that a profile can apply: keys the profile has as properties."""
    return {k: v for k, v in (data_subset or {}).items() if k in dataset.properties}


def parse_subset(items: list[str] | None) -> dict[str, list] | None:
    """``--subset KEY=VALUE ...`` as a selection for :func:`select_profile` (None without items)."""
    if not items:
        return None
    subset: dict[str, list] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"--subset {item!r}: write KEY=VALUE, e.g. --subset n_carbon=9")
        subset.setdefault(key, []).append(int(value) if value.lstrip("-").isdigit() else value)
    return subset


def predict_energies(model: torch.nn.Module, dataset: AtomisticDataset, batch_size: int = 64) -> np.ndarray:
    """Model energies [B] of every structure, in the model's (= the training data's) units."""
    try:
        parameter = next(model.parameters())
        device, dtype = parameter.device, parameter.dtype
    except StopIteration:  # a parameter-free model (tests, baselines)
        device, dtype = torch.device("cpu"), torch.get_default_dtype()
    was_training = model.training
    model.eval()
    energies = []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset)))))
            batch = batch.to(device, dtype)
            # Force heads differentiate through positions: keep autograd on even if the caller
            # (a Lightning test loop) runs under no_grad.
            with torch.enable_grad():
                batch = replace(batch, pos=batch.pos.detach().requires_grad_(True))
                out = model(batch)
            energies.append(out["energy"].detach().reshape(-1).to("cpu", torch.float64).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(energies)


def profile_metrics(reference: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """MAE and R² of the mean-centred curves (see the module docstring)."""
    ref = reference - reference.mean()
    pred = prediction - prediction.mean()
    ss_tot = float((ref**2).sum())
    return {"mae": float(np.abs(pred - ref).mean()),
            "r2": 1.0 - float(((pred - ref) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")}


def evaluate_profile(model: torch.nn.Module, profile_dataset: AtomisticDataset, angle_key: str | None = None,
                     batch_size: int = 64) -> dict:
    """Profile MAE and R² (each curve centred on its mean) and the curves, per molecule and pooled.

    ``angle_key``: ``theta`` (ferrocene) or ``phi`` (cumulene); default: the set's metadata.
    """
    angle_key = angle_key or profile_dataset.metadata.get("angle_key")
    if angle_key is None:
        raise DataError(f"{profile_dataset.source}: no angle_key given and none in the file's metadata; "
                        f"pass angle_key='theta' or 'phi'")
    profile_dataset.require(["energy", angle_key])
    angle = np.asarray(profile_dataset.properties[angle_key].values, dtype=float)
    reference = np.asarray(profile_dataset.properties["energy"].values, dtype=float)
    prediction = predict_energies(model, profile_dataset, batch_size)
    group_key = profile_dataset.metadata.get("group_key")
    if group_key and group_key in profile_dataset.properties:
        labels = np.asarray(profile_dataset.properties[group_key].values)
    else:
        group_key, labels = None, np.zeros(len(angle), dtype=int)
    groups, ref_centred, pred_centred = {}, [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[np.argsort(angle[idx], kind="stable")]
        r, p = reference[idx], prediction[idx]
        ref_centred.append(r - r.mean())
        pred_centred.append(p - p.mean())
        name = f"{group_key}={label}" if group_key else "all"
        groups[name] = {**profile_metrics(r, p), "n_points": len(idx), "angle": angle[idx].tolist(),
                        "reference": r.tolist(), "prediction": p.tolist(),
                        "reference_span": float(np.ptp(r)), "prediction_span": float(np.ptp(p))}
    ref_all, pred_all = np.concatenate(ref_centred), np.concatenate(pred_centred)
    # Pooled: both curves are already centred per molecule, so compare them directly.
    pooled = {"mae": float(np.abs(pred_all - ref_all).mean()),
              "r2": 1.0 - float(((pred_all - ref_all) ** 2).sum()) / float((ref_all**2).sum())}
    return {
        "profile": profile_dataset.source,
        "profile_fingerprint": profile_dataset.fingerprint,
        "angle_key": angle_key,
        "angle_unit": profile_dataset.properties[angle_key].unit,
        "energy_unit": profile_dataset.properties["energy"].unit,
        "angle_period": profile_dataset.metadata.get("angle_period"),
        **pooled,
        "n_points": len(angle),
        "groups": groups,
    }


# ---------------------------------------------------------------------------------------------- report
def write_profile_report(result: dict, directory: str | Path) -> tuple[Path, Path]:
    """``profile.json`` and ``profile.png`` in ``directory``; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, png_path = directory / "profile.json", directory / "profile.png"
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(json_path)
    from eqbench.evaluate.plots import plot_profiles

    plot_profiles({"model": result}, png_path)
    return json_path, png_path


# ---------------------------------------------------------------------------------------------- Lightning
class ProfileEvaluation(Callback):
    """Evaluate ``pl_module.model`` on a rigid-scan profile at the end of testing (or of fitting).

    Writes ``profile.json`` and ``profile.png`` into ``trainer.default_root_dir`` and logs
    ``profile/mae`` and ``profile/r2``.

    Args:
        profile: bundled name (``ferrocene-profile``, ``cumulene-profile``) or a profile file.
        angle_key: ``theta`` or ``phi``; default: from the profile's metadata.
        stage: ``test`` (default: after ``trainer.test``) or ``fit`` (after ``trainer.fit``).
        subset: evaluate only profile points whose property takes these values, e.g.
            ``{"n_carbon": [9]}``; default: the DataModule's own ``subset`` where the profile has
            those properties (a model trained on C9H4 is scored on the C9H4 scan only).
    """

    def __init__(self, profile: str, angle_key: str | None = None, stage: str = "test",
                 subset: dict[str, list] | None = None):
        if stage not in ("test", "fit"):
            raise ConfigError(f"ProfileEvaluation stage must be 'test' or 'fit', not {stage!r}")
        self.profile, self.angle_key, self.stage, self.subset = profile, angle_key, stage, subset
        self.result: dict | None = None

    def _selection(self, trainer, dataset) -> dict[str, list]:
        if self.subset is not None:
            return self.subset
        return profile_subset(getattr(getattr(trainer, "datamodule", None), "subset", None), dataset)

    def _evaluate(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        dataset = load_profile(self.profile)
        dataset = select_profile(dataset, self._selection(trainer, dataset), self.profile)
        self.result = evaluate_profile(pl_module.model, dataset, self.angle_key)
        write_profile_report(self.result, trainer.default_root_dir)
        for logger in getattr(trainer, "loggers", []) or []:
            logger.log_metrics({"profile/mae": self.result["mae"], "profile/r2": self.result["r2"]})

    def on_test_end(self, trainer, pl_module) -> None:
        if self.stage == "test":
            self._evaluate(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.stage == "fit":
            self._evaluate(trainer, pl_module)


# ---------------------------------------------------------------------------------------------- CLI
def _read_config(run_dir: Path) -> dict:
    from eqbench.tracking import run_config

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{config_path} not found; pass --profile (e.g. ferrocene-profile) or check RUN_DIR")
    return run_config(run_dir, require_model=False)


def _data_args(config: dict) -> dict:
    data = config.get("data") or {}
    return (data.get("init_args", data) if isinstance(data, dict) else {}) or {}


def profile_from_config(config: dict, config_path: Path) -> tuple[str, str | None]:
    """(profile, angle_key) of a run's config: its ProfileEvaluation callback, else its data set's profile."""
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    for cb in callbacks if isinstance(callbacks, list) else [callbacks]:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("ProfileEvaluation"):
            init = cb.get("init_args") or {}
            if init.get("profile"):
                return str(init["profile"]), init.get("angle_key")
    path = str(_data_args(config).get("path", ""))
    name = path if path in PROFILE_OF_DATASET else Path(path).stem
    if name in PROFILE_OF_DATASET:
        return PROFILE_OF_DATASET[name], None
    raise ConfigError(f"{config_path}: cannot tell which profile fits data {path!r} (no ProfileEvaluation callback, "
                      f"not a bundled rotor set); pass --profile PATH_OR_NAME")


def run_profile(run_dir: str | Path, profile: str | None = None, angle_key: str | None = None,
                subset: dict[str, list] | None = None) -> tuple[AtomisticDataset, str | None]:
    """(profile points, angle key) a finished run is scored on, as :class:`ProfileEvaluation` scores it.

    The profile and angle key default to the run's config; the points to ``subset``, else to the run's
    own data subset where the profile has those properties (a run trained on C9H4 is scored on C9H4).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} not found; give the directory a training run wrote")
    config_path = run_dir / "config.yaml"
    config = _read_config(run_dir) if profile is None or config_path.is_file() else {}  # read once
    if profile is None:
        profile, configured_key = profile_from_config(config, config_path)
        angle_key = angle_key or configured_key
    dataset = load_profile(profile)
    if subset is None:
        subset = profile_subset(_data_args(config).get("subset"), dataset)
    return select_profile(dataset, subset, str(profile)), angle_key


def run_evaluate_profile(run_dir: str | Path, profile: str | None = None, angle_key: str | None = None,
                         out_dir: str | Path | None = None, checkpoint: str = "best",
                         subset: dict[str, list] | None = None) -> dict:
    """``eqbench evaluate profile RUN_DIR``: the trained model of a run on its rigid-scan profile."""
    from eqbench.tracking import load_model

    dataset, angle_key = run_profile(run_dir, profile, angle_key, subset)
    result = evaluate_profile(load_model(Path(run_dir), checkpoint), dataset, angle_key)
    write_profile_report(result, out_dir or run_dir)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``eqbench evaluate profile``."""
    parser.add_argument("run_dir", help="run directory of a finished training run")
    parser.add_argument("--profile", help="profile set: ferrocene-profile, cumulene-profile or a file (default: "
                                          "from the run's config)")
    parser.add_argument("--angle-key", help="theta or phi (default: from the profile's metadata)")
    parser.add_argument("--subset", nargs="+", metavar="KEY=VALUE",
                        help="profile points to score, e.g. n_carbon=9 (default: the run's data subset)")
    parser.add_argument("--checkpoint", default="best", help="best (default; EMA weights when EMA was on) or last")
    parser.add_argument("--out", help="directory for profile.json/png (default: RUN_DIR)")


def run(args: argparse.Namespace) -> int:
    result = run_evaluate_profile(args.run_dir, args.profile, args.angle_key, args.out, args.checkpoint,
                                  parse_subset(args.subset))
    print(f"profile {result['profile']}: MAE {result['mae']:.4g} {result['energy_unit']}, R² {result['r2']:.4f} "
          f"(curves centred on their means); wrote profile.json and profile.png to {args.out or args.run_dir}")
    return 0
