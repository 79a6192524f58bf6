"""Report tables: golden Markdown/LaTeX written by hand, statistics against hand computations."""

import math
from pathlib import Path

import pytest

from eqbench.errors import ConfigError
from eqbench.report.render import to_html, to_latex, to_markdown
from eqbench.report.tables import ColumnSpec, Record, TableSpec, build_table, log_mae, mean_std, std_mae

GOLDEN = Path(__file__).parent / "golden"
UNITS = {"test_energy_mae": "kcal/mol", "test_forces_mae": "kcal/mol/Å"}


def tab4_records():
    def rec(variant, seed, energy, forces, params, width, state="COMPLETE", reason=None):
        metrics = {} if state != "COMPLETE" else {"test_energy_mae": energy, "test_forces_mae": forces}
        return Record({"variant": variant}, seed, state, metrics, UNITS, params, width, reason)

    return [rec("full", 0, 0.20, 0.40, 589_185, 128), rec("full", 1, 0.30, 0.50, 589_185, 128),
            rec("no_vectors", 0, 0.50, 1.00, 588_421, 210),
            rec("no_vectors", 1, None, None, None, None, state="FAIL", reason="NaN loss")]


def tab4_spec():
    return TableSpec(
        name="tab4", rows="variant", row_order=["full", "no_vectors", "both_off"],
        row_labels={"no_vectors": "no vector features"}, caption="PaiNN Tab. 4 (synthetic numbers)",
        columns=[ColumnSpec("Parameters", kind="parameters"), ColumnSpec("F", kind="width"),
                 ColumnSpec("energy MAE", metric="test_energy_mae"),
                 ColumnSpec("force MAE", metric="test_forces_mae")])


def miller_records():
    values = {("mu", "schnet"): 0.033, ("mu", "l1"): 0.043, ("mu", "l0"): 0.086,
              ("U0", "schnet"): 14.0, ("U0", "l1"): 13.464, ("U0", "l0"): 19.943}
    units = {"test_mu_mae": "D", "test_U0_mae": "meV"}
    return [Record({"target": t, "model": m}, 0, "COMPLETE", {f"test_{t}_mae": v}, units)
            for (t, m), v in values.items()]


def miller_spec(**kwargs):
    metric = "test_{target}_mae"
    return TableSpec(
        name="miller", rows="target", row_labels={"mu": "μ"}, bold="row",
        columns=[ColumnSpec("SchNet", metric=metric, where={"model": "schnet"}),
                 ColumnSpec("L1Net", metric=metric, where={"model": "l1"}),
                 ColumnSpec("L0Net", metric=metric, where={"model": "l0"}),
                 ColumnSpec("ΔE(L1, L0)", kind="delta", a="L1Net", b="L0Net"),
                 ColumnSpec("%E(L1, L0)", kind="relative", a="L1Net", b="L0Net", relative_to="L0Net")],
        summary_rows=["std_mae", "log_mae"], target_std={"mu": 1.5, "U0": 10_000.0}, **kwargs)


def test_tab4_markdown_and_latex_match_golden_files():
    table = build_table(tab4_spec(), tab4_records())
    assert to_markdown(table) == (GOLDEN / "tab4.md").read_text()
    assert to_latex(table) == (GOLDEN / "tab4.tex").read_text()


def test_miller_table_with_deltas_and_dimenet_summary_rows_matches_golden():
    assert to_markdown(build_table(miller_spec(), miller_records())) == (GOLDEN / "miller.md").read_text()


def test_statistics_equal_hand_computations():
    mean, std = mean_std([0.2, 0.3, 0.7])
    assert mean == pytest.approx(0.4)
    assert std == pytest.approx(math.sqrt(((0.2 - 0.4) ** 2 + (0.3 - 0.4) ** 2 + (0.7 - 0.4) ** 2) / 2))
    assert mean_std([1.5]) == (1.5, None)
    # DimeNet App. C Eqs. 10-11 for two targets: MAE/σ = 0.1 and 0.4.
    assert std_mae([1.0, 2.0], [10.0, 5.0]) == pytest.approx(0.25)
    assert log_mae([1.0, 2.0], [10.0, 5.0]) == pytest.approx((math.log(0.1) + math.log(0.4)) / 2)


def test_bolding_follows_direction_and_ties():
    records = [Record({"m": m}, 0, "COMPLETE", {"test_r2": v}) for m, v in (("a", 0.9), ("b", 0.95), ("c", 0.95))]
    spec = TableSpec("t", rows="m", columns=[ColumnSpec("R²", metric="test_r2", better="max")])
    table = build_table(spec, records)
    assert [row[0].bold for row in table.cells] == [False, True, True]


def test_partial_study_marks_failed_and_missing_cells():
    records = tab4_records()
    records[2].state, records[2].metrics, records[2].reason = "FAIL", {}, "CUDA out of memory"
    table = build_table(tab4_spec(), records)
    text = to_markdown(table)
    row = next(line for line in text.splitlines() if line.startswith("| no vector features"))
    assert row.count("FAIL") == 4
    assert "| both_off | — | — | — | — |" in text
    assert "CUDA out of memory" in text and "NaN loss" in text


def test_html_escapes_and_bolds():
    html = to_html(build_table(tab4_spec(), tab4_records()))
    assert "<b>0.250 ± 0.071</b>" in html and "<th>force MAE (kcal/mol/Å)</th>" in html


def test_spec_errors_name_the_column():
    with pytest.raises(ConfigError, match="no column labelled 'L2Net'"):
        spec = miller_spec()
        spec.columns[3].a = "L2Net"
        build_table(spec, miller_records())
    with pytest.raises(ConfigError, match="names factor 'nope'"):
        build_table(TableSpec("t", rows="target", columns=[ColumnSpec("x", metric="test_{nope}")]), miller_records())
    with pytest.raises(ConfigError, match="needs target_std for \\['U0'\\]"):
        spec = miller_spec()
        spec.target_std.pop("U0")
        build_table(spec, miller_records())


def test_average_relative_improvement_row_is_the_mean_of_each_relative_column():
    """Miller et al. Tab. 1: %E_{L1,L0} = (L1 − L0)/L0 per target, averaged over the targets."""
    spec = miller_spec()
    spec.summary_rows, spec.target_std = ["mean_relative"], {}
    spec.columns.append(ColumnSpec("%E(L1, SchNet)", kind="relative", a="L1Net", b="SchNet", relative_to="L0Net"))
    table = build_table(spec, miller_records())
    assert table.row_labels[-1] == "average"
    average = table.cells[-1]
    mu, u0 = (0.043 - 0.086) / 0.086, (13.464 - 19.943) / 19.943
    assert average[4].mean == pytest.approx((mu + u0) / 2)
    assert average[5].mean == pytest.approx(((0.043 - 0.033) / 0.086 + (13.464 - 14.0) / 19.943) / 2)
    assert [c.status for c in average[:4]] == ["missing"] * 4  # MAEs in different units are not averaged
    text = to_markdown(table)
    assert f"| average | — | — | — | — | {100 * (mu + u0) / 2:.1f} % |" in text or \
        f"| average | — | — | — | — | {100 * (mu + u0) / 2:+.1f} % |" in text, text


def test_mean_relative_summary_row_is_accepted_by_the_spec_without_target_std():
    from eqbench.report.spec import parse_report

    raw = {"tables": [{"name": "tab1", "rows": "target", "summary_rows": ["mean_relative"], "columns": [
        {"label": "L1Net", "metric": "test_{target}_mae", "where": {"model": "l1"}},
        {"label": "L0Net", "metric": "test_{target}_mae", "where": {"model": "l0"}},
        {"label": "%E", "kind": "relative", "a": "L1Net", "b": "L0Net"}]}]}
    report = parse_report(raw, "spec.yaml", {"target", "model", "seed"})
    assert report.tables[0].summary_rows == ["mean_relative"] and not report.target_std_from_runs
    with pytest.raises(ConfigError, match="mean_relative"):
        parse_report({"tables": [{**raw["tables"][0], "summary_rows": ["median"]}]}, "spec.yaml",
                     {"target", "model", "seed"})
