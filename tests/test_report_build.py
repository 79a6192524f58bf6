"""`eqbench report`: a synthetic sweep (study + run directories) → exact tables, index.md, plots,
findings, and W&B logging that can never fail the report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState, create_trial

from eqbench.cli import main
from eqbench.errors import ConfigError
from eqbench.report.build import build_report, check_finding
from eqbench.report.spec import Finding
from eqbench.report.tables import Record
from eqbench.sweep.spec import load_spec
from eqbench.sweep.study import default_storage_url, open_storage, open_study

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"

SPEC = {
    "name": "synthetic",
    "description": "A synthetic ablation for the report tests.",
    "base": str(ROOT / "configs" / "quickstart.yaml"),
    "grid": {"variant": {"full": {}, "ablated": {"model.lr": 2.0e-3}, "broken": {"model.lr": 3.0e-3},
                         "never": {"model.lr": 4.0e-3}}},
    "seeds": [0, 1],
    "objective": {"metric": "val_forces_mae", "direction": "minimize"},
    "match_params": {"factor": "variant", "reference": "full", "width": "n_features"},
    "report": {
        "title": "Synthetic ablation report",
        "notes": "Written by the spec's author.",
        "tables": [{
            "name": "ablation", "rows": "variant", "caption": "Synthetic ablation",
            "columns": [
                {"label": "Parameters", "kind": "parameters"}, {"label": "F", "kind": "width"},
                {"label": "energy MAE", "metric": "test_energy_mae"},
                {"label": "force MAE", "metric": "test_forces_mae"},
                {"label": "paper energy MAE", "kind": "paper", "source": "painn_tab4", "key": "energy_mae",
                 "row_map": {"ablated": "no_vector_features"}}]}],
        "plots": [{"name": "profiles", "kind": "profiles", "series": "variant", "seed": 0},
                  {"name": "curves", "kind": "learning_curves", "metric": "val_forces_mae", "series": "variant"}],
        "findings": [{"claim": "the full model beats the ablated one", "metric": "test_forces_mae",
                      "factor": "variant", "order": ["full", "ablated"]}],
    },
}

# (variant, seed, state, energy MAE, force MAE, parameters, width, failure)
TRIALS = [("full", 0, "COMPLETE", 0.20, 0.40, 1000, 64, None),
          ("full", 1, "COMPLETE", 0.30, 0.60, 1000, 64, None),
          ("ablated", 0, "COMPLETE", 0.50, 1.00, 1010, 80, None),
          ("ablated", 1, "FAIL", None, None, None, None, ("nan", "non-finite training loss")),
          ("broken", 0, "FAIL", None, None, None, None, ("oom", "CUDA out of memory")),
          ("broken", 1, "FAIL", None, None, None, None, ("oom", "CUDA out of memory"))]


def write_run(run_dir: Path, energy: float, forces: float, n_parameters: int) -> None:
    run_dir.mkdir(parents=True)
    units = {"energy_mae": "kcal/mol", "forces_mae": "kcal/mol/Å"}
    (run_dir / "metrics.json").write_text(json.dumps({
        "n_parameters": n_parameters,
        "test": {"energy_mae": {"value": energy, "unit": units["energy_mae"]},
                 "forces_mae": {"value": forces, "unit": units["forces_mae"]}}}))
    (run_dir / "run.json").write_text(json.dumps({
        "git_commit": "0123456789abcdef", "accelerator": "CPUAccelerator", "devices": 1,
        "hardware": {"cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2}}))
    angle = [0.0, 90.0, 180.0, 270.0]
    reference = [0.0, 0.5, 1.0, 0.5]
    prediction = [r * (1 - forces) for r in reference]
    (run_dir / "profile.json").write_text(json.dumps({
        "angle_key": "theta", "angle_unit": "deg", "energy_unit": "kcal/mol", "angle_period": 360.0,
        "mae": forces, "r2": 1 - forces,
        "groups": {"all": {"angle": angle, "reference": reference, "prediction": prediction, "mae": forces,
                           "r2": 1 - forces}}}))
    (run_dir / "metrics.csv").write_text(
        "epoch,step,val_forces_mae,val_loss_smoothed\n" + "".join(
            f"{epoch},{10 * epoch},{forces * (3 - epoch)},{1.0}\n" for epoch in range(3)))


def synthetic_sweep(tmp_path: Path):
    """The spec, written to tmp_path, and its study in the default SQLite place under tmp_path/runs."""
    spec_path = tmp_path / "synthetic.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    spec = load_spec(spec_path)
    runs = tmp_path / "runs"
    study = open_study(spec, open_storage(default_storage_url(spec, runs), heartbeat=None))
    for number, (variant, seed, state, energy, forces, params, width, failure) in enumerate(TRIALS):
        run_dir = runs / spec.study_name / f"{number:04d}-variant={variant}-seed={seed}"
        attrs = {"run_dir": str(run_dir), "factors": {"variant": variant}, "seed": seed,
                 "cell": f"variant={variant}|seed={seed}", "duration_s": 60.0}
        if state == "COMPLETE":
            write_run(run_dir, energy, forces, params)
            attrs.update(matched_width=width, n_params=params)
        else:
            attrs.update(fail_kind=failure[0], fail_reason=failure[1])
        study.add_trial(create_trial(state=TrialState[state], value=forces, user_attrs=attrs,
                                     params={}, distributions={}))
    return spec_path, spec, study, runs


def test_report_tables_match_hand_written_golden_files(tmp_path):
    _, spec, study, _ = synthetic_sweep(tmp_path)
    report = build_report(spec, study, tmp_path / "report", formats=("md", "tex", "html"))
    assert (report.out / "tables" / "ablation.md").read_text() == (GOLDEN / "ablation.md").read_text()
    assert (report.out / "tables" / "ablation.tex").read_text() == (GOLDEN / "ablation.tex").read_text()
    html = (report.out / "tables" / "ablation.html").read_text()
    assert "<td><b>0.250 ± 0.071</b></td>" in html and "<td>FAIL</td>" in html


def test_index_says_what_was_run_and_embeds_tables_and_plots(tmp_path):
    _, spec, study, _ = synthetic_sweep(tmp_path)
    report = build_report(spec, study, tmp_path / "report", formats=("md", "tex"), command="eqbench report x")
    index = report.index.read_text()
    assert index.startswith("# Synthetic ablation report\n")
    assert "- Cells: 8 (3 complete, 3 failed, 2 not run)" in index
    assert "- Hardware: Test CPU, 2 cores, torch threads per run: 2 (CPU) (3 runs)" in index
    assert "- Wall time: 6.0 min of trials" in index  # 6 trials × 60 s
    assert "`0123456789ab`" in index and "`eqbench report x`" in index
    assert (GOLDEN / "ablation.md").read_text().splitlines()[2] in index  # the table itself
    assert "[tex](tables/ablation.tex)" in index and "tables/ablation.html" not in index
    for name in ("profiles", "curves"):
        assert f"![{name}](plots/{name}.png)" in index
        assert (report.out / "plots" / f"{name}.png").stat().st_size > 1000
        assert (report.out / "plots" / f"{name}.svg").is_file()
    assert "the full model beats the ablated one — **holds, single seed**" in index
    assert "## Notes\n\nWritten by the spec's author.\n" in index
    records = json.loads((report.out / "records.json").read_text())
    assert sorted((r["factors"]["variant"], r["seed"], r["state"]) for r in records) == [
        ("ablated", 0, "COMPLETE"), ("ablated", 1, "FAIL"), ("broken", 0, "FAIL"), ("broken", 1, "FAIL"),
        ("full", 0, "COMPLETE"), ("full", 1, "COMPLETE")]
    assert not list(tmp_path.glob("report.tmp-*"))  # built aside and swapped in


def test_report_is_rebuilt_whole(tmp_path):
    _, spec, study, _ = synthetic_sweep(tmp_path)
    out = tmp_path / "report"
    out.mkdir()
    (out / "stale.md").write_text("from an older report")
    build_report(spec, study, out, formats=("md",))
    assert not (out / "stale.md").exists() and (out / "index.md").is_file()


def record(value, seed, metric="m"):
    return Record({"model": value[0]}, seed, "COMPLETE", {metric: value[1]}, {metric: "eV"})


def test_findings_on_hand_computed_means():
    beyond = [record(("a", 1.0), 0), record(("a", 1.2), 1), record(("b", 2.0), 0), record(("b", 2.2), 1)]
    result = check_finding(Finding("a beats b", "m", "model", ("a", "b")), beyond)
    assert result.verdict == "holds" and "beyond the seed spread" in result.detail
    assert "a: 1.1 ± 0.14 (n = 2) < b: 2.1 ± 0.14 (n = 2) — m (eV)" in result.detail
    within = [record(("a", 1.0), 0), record(("a", 1.2), 1), record(("b", 1.2), 0), record(("b", 1.4), 1)]
    # |1.1 - 1.3| = 0.2 < 0.141 + 0.141
    assert check_finding(Finding("x", "m", "model", ("a", "b")), within).verdict == "holds on the means only"
    reversed_claim = check_finding(Finding("x", "m", "model", ("b", "a")), beyond)
    assert reversed_claim.verdict == "does not hold"
    assert reversed_claim.detail.startswith("b: 2.1 ± 0.14 (n = 2) > a: 1.1")  # the relation as measured
    assert check_finding(Finding("x", "m", "model", ("a", "b"), better="max"), beyond).verdict == "does not hold"
    undecided = check_finding(Finding("x", "m", "model", ("a", "c")), beyond)
    assert undecided.verdict == "undecided" and "model = c" in undecided.detail


def test_findings_are_judged_within_each_value_of_a_factor_they_do_not_fix():
    """lmax 2 beats lmax 1 by 0.5 on two molecules whose errors differ by 1: pooled, the molecule spread would
    hide it; judged per molecule it holds beyond the seed spread."""
    def rec(lmax, molecule, seed, value):
        return Record({"lmax": lmax, "molecule": molecule}, seed, "COMPLETE", {"m": value}, {"m": "eV"})

    base = {"ethanol": 1.0, "aspirin": 2.0}
    records = [rec(lmax, mol, seed, base[mol] + (0.5 if lmax == 1 else 0.0) + 0.02 * seed)
               for lmax in (1, 2) for mol in base for seed in range(3)]
    result = check_finding(Finding("lmax 2 beats 1", "m", "lmax", (2, 1)), records)
    assert result.verdict == "holds" and result.detail.startswith("judged per molecule: molecule = ethanol: 2: 1.02")
    assert "molecule = aspirin: 2: 2.02 ± 0.02 (n = 3) < 1: 2.52" in result.detail
    # fixing the molecule leaves nothing to stratify by
    fixed = check_finding(Finding("x", "m", "lmax", (2, 1), where={"molecule": "aspirin"}), records)
    assert fixed.verdict == "holds" and "judged per" not in fixed.detail
    # it must hold in every stratum: reversed on aspirin only → does not hold
    mixed = [r if not (r.factors["molecule"] == "aspirin" and r.factors["lmax"] == 1) else
             rec(1, "aspirin", r.seed, 1.0 + 0.02 * r.seed) for r in records]
    assert check_finding(Finding("x", "m", "lmax", (2, 1)), mixed).verdict == "does not hold"
    # a stratum with no trial for one of the compared values leaves the finding undecided
    partial = [r for r in records if not (r.factors["molecule"] == "aspirin" and r.factors["lmax"] == 1)]
    undecided = check_finding(Finding("x", "m", "lmax", (2, 1)), partial)
    assert undecided.verdict == "undecided" and "molecule = aspirin" in undecided.detail


def test_report_section_errors_name_the_file_and_key(tmp_path):
    bad = {**SPEC, "report": {"tables": [{"name": "t", "rows": "model", "columns": [{"label": "x", "metric": "m"}]}]}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"bad\.yaml, line \d+, column \d+: "
                                          r"report\.tables\[0\]\.rows: 'model' is not a factor"):
        load_spec(path)
    bad["report"] = {"plots": [{"name": "p", "kind": "histogram"}]}
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"report\.plots\[0\]\.kind must be one of"):
        load_spec(path)


def test_cli_report_prints_the_table_and_the_index_path(tmp_path, capsys):
    spec_path, _, _, runs = synthetic_sweep(tmp_path)
    out = tmp_path / "reports" / "synthetic"
    assert main(["report", str(spec_path), "--runs-dir", str(runs), "--out", str(out), "--wandb", "disabled",
                 "--format", "md"]) == 0
    printed = capsys.readouterr().out
    assert "| full | 1,000 | 64 | **0.250 ± 0.071** |" in printed
    assert printed.rstrip().endswith(f"report: {out / 'index.md'}")
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["ablation.md"]


def test_cli_report_without_a_study_says_how_to_start_it(tmp_path, capsys):
    spec_path = tmp_path / "synthetic.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    assert main(["report", str(spec_path), "--runs-dir", str(tmp_path / "runs"), "--wandb", "disabled"]) == 2
    assert "run the sweep first: eqbench sweep run" in capsys.readouterr().err
    assert main(["sweep", "status", str(spec_path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "run the sweep first: eqbench sweep run" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "synthetic" / "study.db").exists()  # reading never creates a database


def test_wandb_offline_report_run_holds_the_tables_and_plots(tmp_path):
    # A fresh interpreter, as the command has: wandb keeps per-process settings from earlier tests.
    spec_path, _, _, runs = synthetic_sweep(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"} | {"WANDB_SILENT": "true"}
    result = subprocess.run([sys.executable, "-m", "eqbench.cli", "report", str(spec_path), "--runs-dir", str(runs),
                             "--out", str(tmp_path / "out"), "--wandb", "offline"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    wandb_dir = runs / "synthetic" / "report" / "wandb"
    (table_file,) = wandb_dir.glob("offline-run-*/files/media/table/table/ablation_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:4] == ["variant", "Parameters", "Parameters std", "Parameters text"]
    full = next(row for row in table["data"] if row[0] == "full")
    assert full[table["columns"].index("energy MAE (kcal/mol)")] == pytest.approx(0.25)
    assert full[table["columns"].index("energy MAE (kcal/mol) text")] == "0.250 ± 0.071"
    assert len(list(wandb_dir.glob("offline-run-*/files/media/images/plot/*.png"))) == 2
    (log,) = wandb_dir.glob("offline-run-*/run-*.wandb")
    assert b"report-synthetic" in log.read_bytes() and b"synthetic" in log.read_bytes()


def test_wandb_that_fails_to_start_leaves_a_complete_report(tmp_path, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("W&B backend unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    spec_path, _, _, runs = synthetic_sweep(tmp_path)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="W&B logging of report 'synthetic' failed.*unreachable.*is complete"):
        assert main(["report", str(spec_path), "--runs-dir", str(runs), "--out", str(out)]) == 0
    assert (out / "index.md").is_file() and (out / "tables" / "ablation.md").is_file()


def test_dimenet_summary_rows_take_sigma_from_the_runs(tmp_path):
    # DimeNet Tab. 1: rows are targets; std. MAE = mean(MAE/σ) (Eq. 10), logMAE = mean(log(MAE/σ)) (Eq. 11),
    # with σ of each target from the runs' run.json. Here 0.5/2 and 1/4: std. MAE 25 %, logMAE ln 0.25.
    spec_dict = {**SPEC, "name": "targets", "match_params": None,
                 "grid": {"target": {"energy": {}, "gap": {"model.lr": 2.0e-3}}}, "seeds": [0],
                 "report": {"tables": [{"name": "tab1", "rows": "target", "summary_rows": ["std_mae", "log_mae"],
                                        "columns": [{"label": "SchNet", "metric": "test_{target}_mae"}]}]}}
    del spec_dict["match_params"]
    spec_path = tmp_path / "targets.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict))
    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(default_storage_url(spec, tmp_path / "runs"), heartbeat=None))
    for target, mae, sigma in (("energy", 0.5, 2.0), ("gap", 1.0, 4.0)):
        run_dir = tmp_path / "runs" / target
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({"test": {f"{target}_mae": {"value": mae, "unit": "eV"}}}))
        (run_dir / "run.json").write_text(json.dumps({"data": {"target_std": {target: sigma}}}))
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=mae, params={}, distributions={}, user_attrs={
            "run_dir": str(run_dir), "factors": {"target": target}, "seed": 0, "cell": f"target={target}|seed=0"}))
    report = build_report(spec, study, tmp_path / "out", formats=("md",))
    text = (report.out / "tables" / "tab1.md").read_text()
    assert "| std. MAE (%) | 25.00 |" in text and "| logMAE | -1.39 |" in text
    assert "| energy | **0.500** |" in text and "| gap | 1.000 |" in text


def test_default_table_and_two_factor_plots(tmp_path):
    # Without report.tables: rows = the first factor; parameters, width, then objective and test MAEs once
    # per value of the other factor. Plots with panels (one per cutoff) and a metric against a factor.
    spec_dict = {**SPEC, "name": "two", "grid": {"variant": {"full": {}, "ablated": {"model.lr": 2.0e-3}},
                                                 "cutoff": {"key": "model.representation.init_args.cutoff",
                                                            "values": [2.5, 4.0]}}, "seeds": [0],
                 "report": {"plots": [
                     {"name": "profiles", "kind": "profiles", "series": "variant", "panels": "cutoff"},
                     {"name": "mae", "kind": "metric_vs_factor", "metric": "test_forces_mae", "x": "cutoff",
                      "series": "variant", "labels": {"full": "PaiNN"}}]}}
    spec_path = tmp_path / "two.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict, sort_keys=False))  # the first factor gives the rows
    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(default_storage_url(spec, tmp_path / "runs"), heartbeat=None))
    values = {("full", 2.5): 0.4, ("full", 4.0): 0.3, ("ablated", 2.5): 0.8}  # (ablated, 4.0) never ran
    for (variant, cutoff), forces in values.items():
        run_dir = tmp_path / "runs" / f"{variant}-{cutoff}"
        write_run(run_dir, forces / 2, forces, 1000)
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=forces, params={}, distributions={}, user_attrs={
            "run_dir": str(run_dir), "factors": {"variant": variant, "cutoff": cutoff}, "seed": 0,
            "cell": f"variant={variant}|cutoff={cutoff}|seed=0", "matched_width": 64}))
    report = build_report(spec, study, tmp_path / "out", formats=("md",))
    (table,) = report.tables.values()
    assert table.spec.name == "results" and table.row_keys == ["full", "ablated"]
    assert table.headers == [
        "Parameters", "n_features",
        "val_forces_mae [cutoff = 2.5]", "test_energy_mae [cutoff = 2.5] (kcal/mol)",
        "test_forces_mae [cutoff = 2.5] (kcal/mol/Å)",
        "val_forces_mae [cutoff = 4.0]", "test_energy_mae [cutoff = 4.0] (kcal/mol)",
        "test_forces_mae [cutoff = 4.0] (kcal/mol/Å)"]
    text = (report.out / "tables" / "results.md").read_text()
    # no validation metric in these runs' metrics.json: n/a (ran, not recorded), not FAIL or —
    # bold marks the best of a column only where there is something to compare (4.0 Å has one value)
    assert "| full | 1,000 | 64 | n/a | **0.200** | **0.400** | n/a | 0.150 | 0.300 |" in text
    assert "| ablated | 1,000 | 64 | n/a | 0.400 | 0.800 | — | — | — |" in text  # (ablated, 4.0) never ran
    assert "FAIL" not in text
    assert sorted(report.plots) == ["mae", "profiles"]
    assert (report.out / "plots" / "profiles.png").stat().st_size > 1000
    assert (report.out / "plots" / "mae.svg").is_file()


def test_metric_vs_factor_puts_numeric_variant_names_on_a_numeric_axis(tmp_path, monkeypatch):
    # Grid variants are named by strings ("1000"): on the x axis they must be numbers, in numeric order.
    import eqbench.report.build as build

    sizes = {"1000": 0.9, "10000": 0.3, "2500": 0.6}  # lexicographic order would put 10000 second
    spec_dict = {**SPEC, "name": "sizes", "grid": {"size": {s: {"data.train_size": int(s)} for s in sizes}},
                 "seeds": [0], "report": {"plots": [{"name": "curve", "kind": "metric_vs_factor",
                                                     "metric": "test_forces_mae", "x": "size", "series": "size"}]}}
    del spec_dict["match_params"]
    spec_path = tmp_path / "sizes.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict, sort_keys=False))
    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(default_storage_url(spec, tmp_path / "runs"), heartbeat=None))
    for size, forces in sizes.items():
        run_dir = tmp_path / "runs" / size
        write_run(run_dir, forces / 2, forces, 1000)
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=forces, params={}, distributions={}, user_attrs={
            "run_dir": str(run_dir), "factors": {"size": size}, "seed": 0, "cell": f"size={size}|seed=0"}))
    seen = {}
    monkeypatch.setattr(build.plotting, "plot_metric_vs_factor",
                        lambda series, xlabel, ylabel, path: seen.update(series) or [])
    build_report(spec, study, tmp_path / "out", formats=("md",))
    xs = sorted(x for points in seen.values() for x in points)
    assert xs == [1000.0, 2500.0, 10000.0]
