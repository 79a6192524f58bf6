"""AtomisticTask: model + heads + losses + metrics + EMA + the papers' LR schedules.

Loss: L = Σ_t w_t · mean(ℓ(ŷ_t − y_t)) over targets t, ℓ squared (``mse``) or absolute (``mae``),
the mean taken over every element (molecules × components; atoms × 3 for forces). The two
energy/force conventions of the papers are presets of the weights (``rho``):

- PaiNN (§5.2): w_E = 1 − ρ, w_F = ρ (squared loss, ρ = 0.95 for MD17);
- DimeNet Eq. (2): w_E = 1, w_F = ρ with absolute loss, |ΔE| + ρ/(3N) Σ_iα |ΔF_iα| (ρ = 100).

Metrics are MAE and RMSE per target in the dataset's units (which are the units the
papers report; conversions happen once, when the data is read).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from eqbench.errors import ConfigError
from eqbench.heads import Atomwise, Energy
from eqbench.models.base import AtomisticModel, Representation


@dataclass
class Target:
    """One training target: a dataset property predicted by a head.

    ``head`` is inferred when omitted: ``energy`` and ``forces`` come from the energy head
    (forces as −∂E/∂pos), anything else from an atomwise scalar head with ``aggregation``
    (``sum`` for extensive, ``mean`` for intensive properties).
    """

    name: str
    weight: float = 1.0
    loss: Literal["mse", "mae"] = "mse"
    head: str | None = None
    aggregation: Literal["sum", "mean"] = "sum"
    head_kwargs: dict = field(default_factory=dict)


def energy_force_weights(rho: float, convention: Literal["painn", "dimenet"]) -> tuple[float, float]:
    """(energy weight, force weight) for force weight ρ under a paper's convention."""
    if convention == "painn":
        if not 0 <= rho <= 1:
            raise ConfigError(f"rho={rho}: PaiNN's convention needs 0 ≤ ρ ≤ 1 (w_E = 1 − ρ, w_F = ρ)")
        return 1.0 - rho, rho
    if convention == "dimenet":
        return 1.0, rho
    raise ConfigError(f"rho_convention must be 'painn' or 'dimenet', not {convention!r}")


def build_heads(representation: Representation, targets: list[Target]) -> list[nn.Module]:
    """Heads for ``targets``; one energy head serves both ``energy`` and ``forces``."""
    from eqbench.heads import HEADS

    names = [t.name for t in targets]
    heads: list[nn.Module] = []
    act = getattr(representation, "activation", "silu")
    # A representation may ask for its own atomwise output layers (DimeNet: one linear layer, no bias).
    defaults = dict(getattr(representation, "head_kwargs", {}))
    if "energy" in names or "forces" in names:
        heads.append(Energy(representation.n_features, forces="forces" in names, activation=act, **defaults))
    for t in targets:
        if t.name in ("energy", "forces") and t.head in (None, "energy"):
            continue
        kind = t.head or "atomwise"
        if kind == "atomwise":
            heads.append(Atomwise(representation.n_features, output=t.name, aggregation=t.aggregation,
                                  activation=act, **{**defaults, **t.head_kwargs}))
        elif kind in HEADS:
            heads.append(HEADS[kind](representation, output=t.name, **t.head_kwargs))
        else:
            raise ConfigError(f"target {t.name!r}: unknown head {kind!r}; choose atomwise, energy or one of "
                              f"{sorted(HEADS)}")
    return heads


class AtomisticTask(pl.LightningModule):
    """Train a representation with heads on targets.

    Args:
        representation: the model (``eqbench.models.SchNet``, ``PaiNN``, ...).
        targets: what to learn; default energy and forces.
        rho: if set, overrides the energy/force weights with ρ under ``rho_convention``.
        optimizer: ``adam``, ``adamw`` (PaiNN: weight_decay 0.01) or ``amsgrad`` (DimeNet).
        scheduler: ``plateau`` (PaiNN: ×``plateau_factor`` when the exponentially smoothed validation
            loss stalls for ``plateau_patience`` epochs), ``warmup_exponential`` (DimeNet: linear warm-up
            over ``warmup_steps``, then × ``decay_rate`` every ``decay_steps`` steps) or ``none``.
        ema_decay: decay of the exponential moving average of weights used for validation, test and
            checkpoints (DimeNet: 0.999); None turns EMA off.
        standardize: set each head's scale/shift (and atom references when the dataset has them)
            from the training split before training.
        early_stopping_patience: stop when the validation loss has not improved for this many
            epochs (the papers use early stopping on the validation loss); None: never.
    """

    def __init__(self, representation: Representation, targets: list[Target] | None = None,
                 rho: float | None = None, rho_convention: Literal["painn", "dimenet"] = "painn",
                 optimizer: Literal["adam", "adamw", "amsgrad"] = "adamw", lr: float = 5e-4,
                 weight_decay: float = 0.0,
                 scheduler: Literal["plateau", "warmup_exponential", "none"] = "plateau",
                 plateau_factor: float = 0.5, plateau_patience: int = 10, plateau_smoothing: float = 0.9,
                 min_lr: float = 1e-6, warmup_steps: int = 3000, decay_rate: float = 0.1,
                 decay_steps: int = 2_000_000, ema_decay: float | None = None, standardize: bool = True,
                 early_stopping_patience: int | None = None):
        super().__init__()
        targets = [Target(**t) if isinstance(t, dict) else t for t in (targets or [Target("energy"),
                                                                                  Target("forces")])]
        if rho is not None:
            w_e, w_f = energy_force_weights(rho, rho_convention)
            for t in targets:
                t.weight = {"energy": w_e, "forces": w_f}.get(t.name, t.weight)
        self.targets = targets
        # Plain types only, so checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["representation", "targets"])
        self.hparams["targets"] = [asdict(t) for t in targets]
        self.model = AtomisticModel(representation, build_heads(representation, targets))
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({t.name: MetricCollection({"mae": MeanAbsoluteError(),
                                                            "rmse": MeanSquaredError(squared=False)})
                                  for t in targets})
            for stage in ("val", "test")
        })
        self.register_buffer("smoothed_val_loss", torch.tensor(float("nan")))

    # ------------------------------------------------------------------ forward & loss
    def forward(self, batch):
        return self.model(batch)

    def _loss(self, pred: dict, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, parts = 0.0, {}
        for t in self.targets:
            diff = pred[t.name] - batch.targets[t.name].to(pred[t.name].dtype).view_as(pred[t.name])
            parts[t.name] = diff.pow(2).mean() if t.loss == "mse" else diff.abs().mean()
            total = total + t.weight * parts[t.name]
        return total, parts

    def training_step(self, batch, batch_idx):
        loss, parts = self._loss(self(batch), batch)
        bs = batch.n_molecules
        self.log("train_loss", loss, batch_size=bs, prog_bar=True, on_step=False, on_epoch=True)
        for name, value in parts.items():
            self.log(f"train_{name}_loss", value, batch_size=bs, on_step=False, on_epoch=True)
        return loss

    def _eval_step(self, batch, stage: str):
        pred = self(batch)
        loss, _ = self._loss(pred, batch)
        bs = batch.n_molecules
        self.log(f"{stage}_loss", loss, batch_size=bs, on_step=False, on_epoch=True, sync_dist=True,
                 prog_bar=stage == "val")
        for t in self.targets:
            p, y = pred[t.name].detach(), batch.targets[t.name].to(pred[t.name].dtype).view_as(pred[t.name])
            collection = self.metrics[stage][t.name]
            collection.update(p.reshape(-1), y.reshape(-1))
            for metric_name, metric in collection.items():
                self.log(f"{stage}_{t.name}_{metric_name}", metric, batch_size=bs, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        return self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch, "test")

    def predict_step(self, batch, batch_idx):
        pred = {k: v.detach() for k, v in self(batch).items()}
        pred["n_atoms"] = batch.n_atoms
        if batch.idx is not None:
            pred["index"] = batch.idx
        return pred

    def on_validation_epoch_end(self):
        # PaiNN: the plateau schedule watches an exponentially smoothed validation loss.
        current = self.trainer.callback_metrics.get("val_loss")
        if current is None or self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        s = self.hparams.plateau_smoothing
        prev = self.smoothed_val_loss
        new = current.to(prev) if torch.isnan(prev) else s * prev + (1 - s) * current.to(prev)
        self.smoothed_val_loss.copy_(new)
        self.log("val_loss_smoothed", new, sync_dist=True)

    # ------------------------------------------------------------------ standardisation
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or getattr(dm, "dataset", None) is None or stage == "predict":
            return  # prediction needs no labels
        dm.dataset.require([t.name for t in self.targets])
        if stage != "fit" or not self.hparams.standardize:
            return
        train = dm.train_dataset
        for head in self.model.heads:
            if isinstance(head, Atomwise):
                standardize_head(head, train)
            elif hasattr(head, "standardize"):  # heads with their own standardisation (polarizability)
                head.standardize(train)

    def on_train_start(self) -> None:
        warning = ema_window_warning(self.hparams.ema_decay, self.trainer.estimated_stepping_batches)
        if warning:
            rank_zero_warn(warning)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        h = self.hparams
        params = self.parameters()
        if h.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=h.lr, weight_decay=h.weight_decay)
        elif h.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=h.lr, weight_decay=h.weight_decay)
        elif h.optimizer == "amsgrad":
            opt = torch.optim.Adam(params, lr=h.lr, weight_decay=h.weight_decay, amsgrad=True)
        else:
            raise ConfigError(f"unknown optimizer {h.optimizer!r}; choose adam, adamw or amsgrad")
        if h.scheduler == "none":
            return opt
        if h.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=h.plateau_factor,
                                                               patience=h.plateau_patience, min_lr=h.min_lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss_smoothed",
                                                       "interval": "epoch", "strict": False}}
        if h.scheduler == "warmup_exponential":
            warmup, rate, steps = h.warmup_steps, h.decay_rate, h.decay_steps

            def factor(step: int) -> float:
                return min(1.0, (step + 1) / max(warmup, 1)) * rate ** (step / steps)

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        raise ConfigError(f"unknown scheduler {h.scheduler!r}; choose plateau, warmup_exponential or none")

    def configure_callbacks(self):
        from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging

        callbacks = []
        if self.hparams.ema_decay is not None:
            callbacks.append(EMAWeightAveraging(decay=self.hparams.ema_decay))
        if self.hparams.early_stopping_patience is not None:
            callbacks.append(EarlyStopping(monitor="val_loss", patience=self.hparams.early_stopping_patience))
        return callbacks


def ema_window_warning(decay: float | None, total_steps: float) -> str | None:
    """Why a weight average this slow misleads on a run this short, or None when it does not.

    An EMA of decay d averages over about 1 / (1 − d) steps and still holds d^n of the initial weights after
    n steps; the papers' 0.999 suits their millions of steps, not a CPU run of a few thousand, whose
    validation, test and checkpoints would then score mostly early weights.
    """
    if decay is None or not 0 < decay < 1 or not np.isfinite(total_steps) or total_steps <= 0:
        return None
    window = 1 / (1 - decay)
    if window <= total_steps / 10:
        return None
    fitting = 1 - 10 / total_steps  # a window of a tenth of the run
    lower = f"lower model.ema_decay (e.g. {fitting:.3g}), " if fitting >= 0.5 else ""
    return (f"model.ema_decay {decay} averages the weights over about {window:,.0f} steps, more than a tenth of "
            f"this run's {int(total_steps):,}; validation, test and checkpoints see mostly early weights "
            f"({decay ** total_steps:.0%} of the initial ones at the end). Either {lower}set it to null, or "
            f"train longer.")


def standardize_head(head: Atomwise, train) -> None:
    """Set a head's scale, shift and atom references from the training molecules.

    Extensive (sum) targets: residual r = y − Σ_i atomref[z_i] (atomref from the dataset when it has
    one, else 0); shift = mean(r / n), scale = std(r / n) per atom. Intensive (mean) targets: shift =
    mean(y), scale = std(y). An energy head that also predicts forces takes scale = RMS of the force
    components instead (NequIP's choice): for one molecule sampled thermally, std(E/n) is tiny next to
    the forces (ferrocene: 0.26 kcal/mol against 15 kcal/mol/Å), and a scale that small leaves the
    network unable to produce forces of the right size early in training.
    """
    name = head.output
    n = train.n_atoms.astype(np.float64)
    forces_rms = None
    if getattr(head, "forces", False) and "forces" in train.properties:
        forces = np.asarray(train.properties["forces"].values, dtype=np.float64)
        forces_rms = float(np.sqrt((forces**2).mean())) or None
    if name in train.properties:
        y = np.asarray(train.properties[name].values, dtype=np.float64).reshape(len(train), -1)[:, 0]
        atomref = train.atomrefs.get(name)
        if head.aggregation == "sum":
            ref = np.zeros(len(train)) if atomref is None else np.add.reduceat(atomref[train.z], train.offsets[:-1])
            per_atom = (y - ref) / n
            head.set_standardization(forces_rms or _safe_std(per_atom), float(per_atom.mean()), atomref)
        else:
            head.set_standardization(_safe_std(y), float(y.mean()), None)
    elif forces_rms is not None:
        head.set_standardization(forces_rms, 0.0, None)


def _safe_std(x: np.ndarray) -> float:
    s = float(x.std())
    return s if s > 0 and np.isfinite(s) else 1.0
