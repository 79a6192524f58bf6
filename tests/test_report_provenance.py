"""What a report says about how its numbers came about: findings fixed when the study was created (and
changes to them after), time-limited runs, cells that failed before succeeding, the runs' commits."""

import io
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState, create_trial

from eqbench.report.build import build_report
from eqbench.report.study import records_from_study
from eqbench.sweep.spec import load_spec
from eqbench.sweep.status import LEGEND, print_status
from tests.test_report_build import SPEC, synthetic_sweep

ROOT = Path(__file__).resolve().parents[1]


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _respec(spec_path: Path, findings: list) -> object:
    raw = yaml.safe_load(spec_path.read_text())
    raw["report"]["findings"] = findings
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(spec_path)


def test_findings_are_stored_with_the_study_when_it_is_created(tmp_path):
    _, spec, study, _ = synthetic_sweep(tmp_path)
    assert study.user_attrs["findings"] == SPEC["report"]["findings"]
    assert study.user_attrs["objective"] == "val_forces_mae" and study.user_attrs["objective_direction"] == "minimize"
    report = build_report(spec, study, tmp_path / "report", formats=("md",))
    index = report.index.read_text()
    assert "stored with the study when the sweep started" in index and "changed after" not in index
    assert not report.changed_findings


def test_a_claim_changed_after_the_sweep_started_is_judged_as_stored_and_as_changed(tmp_path):
    spec_path, _, study, _ = synthetic_sweep(tmp_path)
    # After the results: the claim is moved from force MAE to energy MAE, and the order reversed.
    changed = {"claim": "the ablated model beats the full one on energies", "metric": "test_energy_mae",
               "factor": "variant", "order": ["ablated", "full"]}
    spec = _respec(spec_path, [changed])
    report = build_report(spec, study, tmp_path / "report", formats=("md",))
    # Judged: the stored claim (full 0.5 ± 0.14 < ablated 1.0, one seed).
    assert [r.finding.claim for r in report.findings] == ["the full model beats the ablated one"]
    assert report.findings[0].verdict == "holds, single seed"
    # Shown too: the spec's current claim on the same runs (ablated 0.5 vs full 0.25: does not hold).
    assert [(r.finding.claim, r.verdict) for r in report.changed_findings] == [
        ("the ablated model beats the full one on energies", "does not hold")]
    index = report.index.read_text()
    assert "**The claims were changed after the sweep started.**" in index
    assert "### Changed after the sweep started" in index
    assert index.index("the full model beats the ablated one —") < index.index("### Changed after")
    assert index.index("### Changed after") < index.index("the ablated model beats the full one on energies —")


def test_stated_first_shows_the_original_claim_with_its_verdict(tmp_path):
    spec_path, _, study, _ = synthetic_sweep(tmp_path)
    study.set_user_attr("findings", None)  # a study from before findings were stored
    finding = {"claim": "the full model beats the ablated one on energies", "metric": "test_energy_mae",
               "factor": "variant", "order": ["full", "ablated"],
               "stated_first": {"claim": "the ablated model beats the full one on forces", "metric": "test_forces_mae",
                                "order": ["ablated", "full"]}}
    spec = _respec(spec_path, [finding])
    report = build_report(spec, study, tmp_path / "report", formats=("md",))
    (result,) = report.findings
    assert result.verdict == "holds, single seed"  # energies: full 0.25 < ablated 0.5
    assert result.first.finding.metric == "test_forces_mae" and result.first.verdict == "does not hold"
    index = report.index.read_text()
    assert "predates stored findings" in index
    assert ('  - As first stated, before it was changed after results were seen: "the ablated model beats the '
            'full one on forces" — **does not hold**') in index


def test_time_limited_runs_are_marked_in_tables_index_and_status(tmp_path):
    _, spec, study, runs = synthetic_sweep(tmp_path)
    limited = next(t for t in study.get_trials() if t.user_attrs["factors"]["variant"] == "full"
                   and t.user_attrs["seed"] == 1)
    _edit_json(Path(limited.user_attrs["run_dir"]) / "metrics.json", stop_reason="max_time", epochs=17)
    for t in study.get_trials():
        if t.state == TrialState.COMPLETE and t.number != limited.number:
            _edit_json(Path(t.user_attrs["run_dir"]) / "metrics.json", stop_reason="max_epochs", epochs=20)
    report = build_report(spec, study, tmp_path / "report", formats=("md", "tex"))
    table = (report.out / "tables" / "ablation.md").read_text()
    assert "| full | 1,000 | 64 | **0.250 ± 0.071 ‡** | **0.500 ± 0.141 ‡** | 0.159 |" in table
    assert "| ablated | 1,010 † (1/2) | 80 † (1/2) | 0.500 † (1/2) | 1.000 † (1/2) |" in table  # not limited
    assert "_‡ some runs of the cell were stopped by budget.max_time" in table
    assert r"$^\ddagger$" in (report.out / "tables" / "ablation.tex").read_text()
    index = report.index.read_text()
    assert "- Time-limited runs (‡, stopped by budget.max_time before max_epochs" in index
    assert "variant = full, seed 1" in index
    out = io.StringIO()
    print_status(spec, study, plain=True, out=out)
    text = out.getvalue()
    assert "17 (max_time) ‡" in text and "20 (max_epochs)" in text and LEGEND in text


def test_no_time_limited_run_is_said_too(tmp_path):
    _, spec, study, _ = synthetic_sweep(tmp_path)
    index = build_report(spec, study, tmp_path / "report", formats=("md",)).index.read_text()
    assert "- Time-limited runs: none" in index and "‡" not in index
    out = io.StringIO()
    print_status(spec, study, plain=True, out=out)
    assert LEGEND not in out.getvalue()


def test_failed_then_retried_cells_are_counted_with_their_first_failure(tmp_path):
    _, spec, study, runs = synthetic_sweep(tmp_path)
    # ablated seed 1 failed (nan); a retry of the cell completes.
    run_dir = runs / spec.study_name / "0099-variant=ablated-seed=1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"n_parameters": 1010, "test": {
        "energy_mae": {"value": 0.7, "unit": "kcal/mol"}, "forces_mae": {"value": 1.2, "unit": "kcal/mol/Å"}}}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=1.2, params={}, distributions={}, user_attrs={
        "run_dir": str(run_dir), "factors": {"variant": "ablated"}, "seed": 1, "cell": "variant=ablated|seed=1"}))
    records = {(r.factors["variant"], r.seed): r for r in records_from_study(study)}
    assert records["ablated", 1].state == "COMPLETE"
    assert records["ablated", 1].earlier_failures == ["nan: non-finite training loss"]
    assert records["full", 0].earlier_failures == []
    index = build_report(spec, study, tmp_path / "report", formats=("md",)).index.read_text()
    assert "- Cells: 8 (4 complete, 2 failed, 2 not run)" in index
    assert "- Cells that failed and then succeeded on retry: 1\n" \
           "  - variant = ablated, seed 1: 1 failed attempt, first: nan: non-finite training loss" in index


def _commits(n: int) -> list[str]:
    """The last commit (not a merge) that changed eqbench/report/build.py, then its parent: the two differ
    in that commit's few files, so the report's list of differing files (8 shown) names build.py."""
    out = subprocess.run(["git", "log", "--no-merges", "--format=%H %P", "-n", "1", "--",
                          "eqbench/report/build.py"], cwd=ROOT, capture_output=True, text=True)
    commits = out.stdout.split()[:2]
    if out.returncode != 0 or len(commits) < n:
        pytest.skip("needs eqbench's git history (a checkout with at least two commits touching eqbench/)")
    return commits


def test_runs_from_commits_with_different_code_are_warned_about(tmp_path):
    newer, older = _commits(2)[:2]
    _, spec, study, _ = synthetic_sweep(tmp_path)
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    for t, commit in zip(done, [older, newer, newer]):
        _edit_json(Path(t.user_attrs["run_dir"]) / "run.json", git_commit=commit)
    _edit_json(Path(done[0].user_attrs["run_dir"]) / "run.json", git_dirty=True, git_diff_sha256="ab" * 32,
               git_dirty_files=["eqbench/task.py", "README.md"])
    index = build_report(spec, study, tmp_path / "report", formats=("md",)).index.read_text()
    first, second = sorted([older, newer])
    assert f"`{first[:12]}` (" in index and f"`{second[:12]}` (" in index
    assert f"- **Warning:** the runs' code differs: `{second[:12]}` changes `eqbench/report/build.py`" in index \
        or f"`{second[:12]}` changes " in index and "eqbench/report/build.py" in index
    assert "runs from a dirty tree (diff sha256 `abababababab`), uncommitted changes under eqbench/: " \
           "`eqbench/task.py`" in index


def test_unknown_commits_cannot_be_compared_and_say_so(tmp_path):
    _, spec, study, _ = synthetic_sweep(tmp_path)
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    _edit_json(Path(done[0].user_attrs["run_dir"]) / "run.json", git_commit="f" * 40)
    index = build_report(spec, study, tmp_path / "report", formats=("md",)).index.read_text()
    assert "cannot be checked here (the commit is not in this checkout)" in index
