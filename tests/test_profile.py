"""Rotor-profile evaluation (eqbench.evaluate.profile) on the bundled profile sets; no tblite needed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eqbench.data.cache import read_cache
from eqbench.errors import ConfigError
from eqbench.evaluate.profile import (
    ProfileEvaluation,
    evaluate_profile,
    parse_subset,
    profile_from_config,
    run_evaluate_profile,
    run_profile,
    write_profile_report,
)

BUNDLED = Path(__file__).resolve().parents[1] / "eqbench" / "data" / "bundled"


class ReferenceModel(torch.nn.Module):
    """Returns the reference energy (plus ``offset`` per carbon count): a perfect profile model.

    It looks the energy up in float64 by dataset index, as batch targets are float32 and total
    energies of ~-2e4 kcal/mol keep only ~1e-3 kcal/mol there.
    """

    def __init__(self, dataset, offset: float = 0.0, per_carbon: float = 0.0):
        super().__init__()
        self.register_buffer("reference", torch.tensor(dataset.properties["energy"].values, dtype=torch.float64))
        self.offset, self.per_carbon = offset, per_carbon

    def forward(self, batch):
        n_carbon = torch.zeros(batch.n_molecules, dtype=torch.float64).index_add_(
            0, batch.batch, (batch.z == 6).to(torch.float64))
        return {"energy": self.reference[batch.idx] + self.offset + self.per_carbon * n_carbon}


class ConstantModel(torch.nn.Module):
    """Ignores the geometry: the flat line of a model that cannot resolve the torsion."""

    def forward(self, batch):
        return {"energy": torch.full((batch.n_molecules,), -123.0)}


class ForceModel(ReferenceModel):
    """Like ReferenceModel but differentiates through positions, as a force head does."""

    def forward(self, batch):
        assert torch.is_grad_enabled() and batch.pos.requires_grad
        energy = super().forward(batch)["energy"] + 0 * batch.pos.sum()
        torch.autograd.grad(energy.sum(), batch.pos, create_graph=self.training)
        return {"energy": energy}


@pytest.fixture(scope="module")
def ferrocene_profile():
    return read_cache(BUNDLED / "ferrocene_profile.h5")


@pytest.fixture(scope="module")
def cumulene_profile():
    return read_cache(BUNDLED / "cumulene_profile.h5")


def test_reference_model_is_perfect(ferrocene_profile):
    result = evaluate_profile(ReferenceModel(ferrocene_profile, offset=1e4), ferrocene_profile, "theta")
    assert result["mae"] == pytest.approx(0.0, abs=1e-9) and result["r2"] == pytest.approx(1.0, abs=1e-12)
    curve = result["groups"]["all"]
    assert curve["n_points"] == len(ferrocene_profile) == 72
    assert curve["angle"] == sorted(curve["angle"])
    assert result["energy_unit"] == "kcal/mol"


def test_constant_model_has_r2_zero(ferrocene_profile):
    result = evaluate_profile(ConstantModel(), ferrocene_profile)  # angle key from the metadata
    energy = ferrocene_profile.properties["energy"].values
    assert result["angle_key"] == "theta"
    assert result["r2"] == pytest.approx(0.0, abs=1e-12)
    assert result["mae"] == pytest.approx(np.abs(energy - energy.mean()).mean())


def test_wrong_shape_is_penalised(ferrocene_profile):
    mirrored = ReferenceModel(ferrocene_profile)  # E(θ) upside down: the worst shape
    mirrored.reference.neg_()
    assert evaluate_profile(mirrored, ferrocene_profile)["r2"] == pytest.approx(-3.0)


def test_cumulene_profiles_are_centred_per_chain_length(cumulene_profile):
    # A per-size energy offset (as a model's atom references would give) must not count as error.
    result = evaluate_profile(ReferenceModel(cumulene_profile, per_carbon=37.0), cumulene_profile, "phi")
    sizes = sorted(set(cumulene_profile.properties["n_carbon"].values.tolist()))
    assert list(result["groups"]) == [f"n_carbon={n}" for n in sizes]
    assert result["mae"] == pytest.approx(0.0, abs=1e-8) and result["r2"] == pytest.approx(1.0)
    for group in result["groups"].values():
        assert group["r2"] == pytest.approx(1.0) and group["n_points"] == 37
    assert evaluate_profile(ConstantModel(), cumulene_profile)["r2"] == pytest.approx(0.0, abs=1e-12)


def test_models_that_need_position_gradients_work_under_no_grad(ferrocene_profile):
    with torch.no_grad():
        result = evaluate_profile(ForceModel(ferrocene_profile).train(), ferrocene_profile)
    assert result["r2"] == pytest.approx(1.0)


def test_report_files(tmp_path, cumulene_profile):
    result = evaluate_profile(ConstantModel(), cumulene_profile)
    json_path, png_path = write_profile_report(result, tmp_path / "run")
    assert json.loads(json_path.read_text())["r2"] == pytest.approx(0.0, abs=1e-12)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_callback_writes_into_the_run_directory(tmp_path, ferrocene_profile):
    model = ReferenceModel(ferrocene_profile)
    callback = ProfileEvaluation("ferrocene-profile", "theta")
    logged = []
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path),
                              loggers=[SimpleNamespace(log_metrics=logged.append)])
    callback.on_fit_end(trainer, SimpleNamespace(model=model))  # stage "test": nothing yet
    assert not (tmp_path / "profile.json").exists()
    callback.on_test_end(trainer, SimpleNamespace(model=model))
    assert json.loads((tmp_path / "profile.json").read_text())["r2"] == pytest.approx(1.0)
    assert (tmp_path / "profile.png").is_file()
    assert logged[0]["profile/r2"] == pytest.approx(1.0)


def test_callback_scores_only_the_chain_lengths_the_data_selects(tmp_path, cumulene_profile):
    model = ReferenceModel(cumulene_profile)
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path), loggers=[],
                              datamodule=SimpleNamespace(subset={"n_carbon": [9]}))
    ProfileEvaluation("cumulene-profile").on_test_end(trainer, SimpleNamespace(model=model))
    result = json.loads((tmp_path / "profile.json").read_text())
    assert list(result["groups"]) == ["n_carbon=9"] and result["n_points"] == 37  # φ = 0…180° in 5° steps
    with pytest.raises(ConfigError, match="selects no profile points"):
        ProfileEvaluation("cumulene-profile", subset={"n_carbon": [6]}).on_test_end(
            trainer, SimpleNamespace(model=model))


def test_callback_runs_in_a_lightning_test_loop(tmp_path, cumulene_profile):
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = ReferenceModel(cumulene_profile)

        def test_step(self, batch, batch_idx):
            return None

    loader = torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=1)
    trainer = pl.Trainer(default_root_dir=str(tmp_path), callbacks=[ProfileEvaluation("cumulene-profile")],
                         logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(Module(), loader, verbose=False)
    assert json.loads((tmp_path / "profile.json").read_text())["angle_key"] == "phi"


def _write_config(run_dir: Path, text: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(text)


def test_profile_is_read_from_the_run_config(tmp_path):
    path = tmp_path / "config.yaml"
    assert profile_from_config({"data": {"path": "ferrocene"}}, path) == ("ferrocene-profile", None)
    callback = {"class_path": "eqbench.evaluate.profile.ProfileEvaluation",
                "init_args": {"profile": "cumulene-profile", "angle_key": "phi"}}
    config = {"trainer": {"callbacks": [callback]}, "data": {"path": "somewhere/else.h5"}}
    assert profile_from_config(config, path) == ("cumulene-profile", "phi")
    with pytest.raises(ConfigError, match="--profile"):
        profile_from_config({"data": {"path": "qm9"}}, path)
    _write_config(tmp_path / "run", "data:\n  path: cumulene\n")  # the file route: run_profile reads config.yaml
    dataset, angle_key = run_profile(tmp_path / "run")
    assert angle_key is None and len(dataset) > 0 and "phi" in dataset.properties


def test_evaluate_profile_verb_uses_the_trained_model(tmp_path, monkeypatch, cumulene_profile):
    import eqbench.tracking

    run_dir = tmp_path / "run"
    _write_config(run_dir, "data:\n  path: cumulene\n")
    loaded = []
    monkeypatch.setattr(eqbench.tracking, "load_model", lambda d, checkpoint="best": loaded.append(d) or
                        ReferenceModel(cumulene_profile))
    result = run_evaluate_profile(run_dir)
    assert loaded == [run_dir] and result["r2"] == pytest.approx(1.0)
    assert (run_dir / "profile.json").is_file() and (run_dir / "profile.png").is_file()
    with pytest.raises(ConfigError, match="not found"):
        run_evaluate_profile(tmp_path / "missing")


class CarbonCounter(ConstantModel):
    """A flat model that records the carbon counts of the molecules it is asked about."""

    def __init__(self):
        super().__init__()
        self.seen: set[int] = set()

    def forward(self, batch):
        counts = torch.zeros(batch.n_molecules, dtype=torch.long).index_add_(0, batch.batch, (batch.z == 6).long())
        self.seen.update(counts.tolist())
        return super().forward(batch)


def test_evaluate_profile_verb_scores_the_run_chain_lengths(tmp_path, monkeypatch):
    import eqbench.tracking

    run_dir = tmp_path / "run"
    _write_config(run_dir, "data:\n  init_args:\n    path: cumulene\n    subset: {n_carbon: [7]}\n")
    models = []
    monkeypatch.setattr(eqbench.tracking, "load_model", lambda d, checkpoint="best": models.append(CarbonCounter())
                        or models[-1])
    run_evaluate_profile(run_dir)
    assert models[-1].seen == {7}  # the run's own chain length, as ProfileEvaluation scores it
    run_evaluate_profile(run_dir, subset={"n_carbon": [5, 9]})
    assert models[-1].seen == {5, 9}
    with pytest.raises(ConfigError, match="selects no profile points"):
        run_evaluate_profile(run_dir, subset={"n_carbon": [6]})


def test_subset_arguments_are_parsed_into_a_selection():
    assert parse_subset(None) is None
    assert parse_subset(["n_carbon=5", "n_carbon=9", "name=C5H4"]) == {"n_carbon": [5, 9], "name": ["C5H4"]}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_subset(["n_carbon"])
