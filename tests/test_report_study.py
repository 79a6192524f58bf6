"""Records from an Optuna study: the COMPLETE trial of a cell wins; failures and missing cells are kept."""

import json

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from eqbench.report.render import to_markdown
from eqbench.report.study import records_from_study
from eqbench.report.tables import ColumnSpec, TableSpec, build_table


def add_trial(study, tmp_path, number, variant, seed, state, energy=None, fail=None):
    run_dir = tmp_path / f"{number:04d}"
    run_dir.mkdir()
    if energy is not None:
        (run_dir / "metrics.json").write_text(json.dumps({
            "n_parameters": 1000 + number, "test": {"energy_mae": {"value": energy, "unit": "kcal/mol"}}}))
    attrs = {"run_dir": str(run_dir), "factors": {"variant": variant}, "seed": seed,
             "cell": f"variant={variant}|seed={seed}", "matched_width": 64}
    if fail:
        attrs.update(fail_kind=fail[0], fail_reason=fail[1])
    study.add_trial(create_trial(
        state=state, value=energy if state == TrialState.COMPLETE else None,
        params={"variant": variant}, distributions={"variant": CategoricalDistribution(["full", "ablated", "x"])},
        user_attrs=attrs))


def test_records_pick_complete_trials_and_keep_failures(tmp_path):
    study = optuna.create_study(direction="minimize")
    add_trial(study, tmp_path, 0, "full", 0, TrialState.COMPLETE, energy=0.2)
    add_trial(study, tmp_path, 1, "full", 1, TrialState.FAIL, fail=("killed", "worker lost"))  # retried below
    add_trial(study, tmp_path, 2, "full", 1, TrialState.COMPLETE, energy=0.4)
    add_trial(study, tmp_path, 3, "full", 1, TrialState.FAIL, fail=("duplicate", "cell run by trial 2"))
    add_trial(study, tmp_path, 4, "ablated", 0, TrialState.FAIL, fail=("nan", "non-finite training loss"))
    add_trial(study, tmp_path, 5, "ablated", 1, TrialState.FAIL, fail=("oom", "CUDA out of memory"))
    records = records_from_study(study)
    assert sorted((r.factors["variant"], r.seed, r.state) for r in records) == [
        ("ablated", 0, "FAIL"), ("ablated", 1, "FAIL"), ("full", 0, "COMPLETE"), ("full", 1, "COMPLETE")]
    full = sorted((r for r in records if r.factors["variant"] == "full"), key=lambda r: r.seed)
    assert [r.metrics["test_energy_mae"] for r in full] == [0.2, 0.4] and full[0].units["test_energy_mae"] == "kcal/mol"
    assert full[1].n_parameters == 1002 and full[1].width == 64

    spec = TableSpec("t", rows="variant", row_order=["full", "ablated", "never_run"],
                     columns=[ColumnSpec("energy MAE", metric="test_energy_mae")])
    text = to_markdown(build_table(spec, records))
    assert "| full | 0.300 ± 0.141 |" in text and "| ablated | FAIL |" in text and "| never_run | — |" in text
    assert "nan: non-finite training loss" in text and "oom: CUDA out of memory" in text
