"""The ``report:`` section of a sweep spec: which tables, plots and findings ``eqbench report`` makes.

Format (every key optional; without the section the report has one default table, see
:func:`default_report`)::

    report:
      title: PaiNN ablation (Tab. 4)
      notes: >                                # Markdown shown under the findings (scale, caveats)
        ...
      tables:
        - name: tab4                          # file stem: tables/tab4.md|tex|html
          rows: variant                       # the factor whose values are the rows
          row_order: [full, no_vector_features]
          row_labels: {no_vector_features: no vector features}
          bold: column                        # column | row | none
          caption: ...
          columns:
            - {label: Parameters, kind: parameters}
            - {label: F, kind: width}
            - {label: energy MAE, metric: test_energy_mae}            # kind metric is the default
            - {label: R² (2.5 Å), metric: profile_r2, where: {cutoff: 2.5}, better: max}
            - {label: ΔE(L1, L0), kind: delta, a: L1Net, b: L0Net}
            - {label: "%E(L1, L0)", kind: relative, a: L1Net, b: L0Net, relative_to: L0Net}
            - {label: paper, kind: paper, source: painn_tab4, key: energy_mae,
               row_map: {no_scalar_product_no_propagation: both_off}}
          summary_rows: [std_mae, log_mae]    # DimeNet App. C, Eqs. 10-11; rows must be targets
                                              # mean_relative: mean of each relative column (Miller et al.)
          target_std: runs                    # σ per target from the runs' run.json (default), or a mapping
      plots:
        - {name: profiles, kind: profiles, series: model, panels: cutoff, seed: 0,
           labels: {painn: PaiNN, schnet: SchNet}}       # legend labels (default: the values)
        - {name: profile_mae, kind: metric_vs_factor, metric: profile_mae, x: cutoff, series: model}
        - {name: curves, kind: learning_curves, metric: val_forces_mae, series: variant, seed: 0}
      findings:                               # the paper's claims, checked on the means over seeds
        - claim: PaiNN resolves the rotor at 2.5 Å where SchNet cannot
          metric: profile_r2
          factor: model
          order: [painn, schnet]              # each better than the next (``better`` decides)
          better: max
          where: {cutoff: 2.5}
          stated_first: {metric: profile_mae}  # optional: the keys that differed when the claim was first
                                              # stated, for a claim changed after results were seen

Findings are fixed before the results: ``eqbench sweep run`` stores them (and the objective) with the
study when it creates it, and ``eqbench report`` judges the stored claims. If the spec's findings differ
from the stored ones, the report shows both verdicts and says the claims were changed after the sweep
started. ``stated_first`` declares such a change for a study that predates stored findings.

``metric`` names are those of the sweep's objective: ``<val|test>_<target>_<mae|rmse>``, ``val_loss``,
``profile_mae``, ``profile_r2``; a metric may name a factor in braces (``test_{target}_mae``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eqbench.errors import ConfigError
from eqbench.report.tables import ColumnSpec, TableSpec

REPORT_KEYS = {"title", "notes", "tables", "plots", "findings"}
TABLE_KEYS = {"name", "rows", "row_order", "row_labels", "bold", "caption", "columns", "summary_rows", "target_std"}
COLUMN_KEYS = {"label", "kind", "metric", "where", "a", "b", "relative_to", "better", "decimals", "source", "key",
               "row_map"}
COLUMN_KINDS = ("metric", "parameters", "width", "delta", "relative", "paper")
PLOT_KINDS = {"profiles": {"name", "kind", "series", "labels", "panels", "where", "seed"},
              "metric_vs_factor": {"name", "kind", "metric", "x", "series", "labels", "where", "xlabel", "ylabel"},
              "learning_curves": {"name", "kind", "metric", "series", "labels", "where", "seed", "ylabel", "log"}}
FINDING_KEYS = {"claim", "metric", "factor", "order", "better", "where", "stated_first"}


@dataclass(frozen=True)
class PlotSpec:
    name: str
    kind: str  # profiles | metric_vs_factor | learning_curves
    series: str | None = None  # factor: one line per value
    labels: dict = field(default_factory=dict)  # series value -> legend label
    metric: str | None = None
    x: str | None = None  # metric_vs_factor: the factor on the x axis
    panels: str | None = None  # profiles: one figure per value of this factor
    where: dict = field(default_factory=dict)
    seed: int | None = None  # profiles / learning curves: which seed's run (default: the lowest)
    xlabel: str | None = None
    ylabel: str | None = None
    log: bool = True


@dataclass(frozen=True)
class Finding:
    claim: str
    metric: str
    factor: str
    order: tuple
    better: str = "min"
    where: dict = field(default_factory=dict)
    stated_first: Finding | None = None  # the claim as first stated, when it was changed after results existed


@dataclass
class ReportSpec:
    title: str = ""
    notes: str = ""
    tables: list[TableSpec] = field(default_factory=list)
    target_std_from_runs: set[str] = field(default_factory=set)  # tables whose σ come from run.json
    plots: list[PlotSpec] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_keys(body, allowed: set[str], where: str) -> None:
    _require(isinstance(body, dict), f"{where} must be a mapping")
    unknown = set(body) - allowed
    _require(not unknown, f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _check_factor(name, factors: set[str], where: str) -> None:
    _require(name in factors, f"{where}: {name!r} is not a factor of this sweep; factors: {sorted(factors)}")


def _check_where(where_map, factors: set[str], where: str) -> dict:
    where_map = where_map or {}
    _require(isinstance(where_map, dict), f"{where}.where must map factor names to values")
    for name in where_map:
        _check_factor(name, factors, f"{where}.where")
    return dict(where_map)


def parse_report(raw, where: str, factors: set[str]) -> ReportSpec:
    """Validate a spec's ``report:`` section; ``factors`` are the sweep's grid factor names (and ``seed``)."""
    if raw is None:
        return ReportSpec()
    where = f"{where}: report"
    _check_keys(raw, REPORT_KEYS, where)
    report = ReportSpec(title=str(raw.get("title") or ""), notes=str(raw.get("notes") or "").strip())
    names = set()
    for i, body in enumerate(raw.get("tables") or []):
        table, from_runs = _parse_table(body, f"{where}.tables[{i}]", factors)
        _require(table.name not in names, f"{where}.tables[{i}]: a second table named {table.name!r}")
        names.add(table.name)
        report.tables.append(table)
        if from_runs:
            report.target_std_from_runs.add(table.name)
    for i, body in enumerate(raw.get("plots") or []):
        plot = _parse_plot(body, f"{where}.plots[{i}]", factors)
        _require(plot.name not in names, f"{where}.plots[{i}]: the name {plot.name!r} is taken")
        names.add(plot.name)
        report.plots.append(plot)
    for i, body in enumerate(raw.get("findings") or []):
        report.findings.append(_parse_finding(body, f"{where}.findings[{i}]", factors))
    return report


def _parse_table(body, where: str, factors: set[str]) -> tuple[TableSpec, bool]:
    _check_keys(body, TABLE_KEYS, where)
    for key in ("name", "rows", "columns"):
        _require(key in body, f"{where}: {key!r} is required")
    if body["rows"] not in factors and body.get("row_order"):
        # Rows that are not a factor (the targets of multi-target runs) name a variable for metric braces.
        factors = factors | {body["rows"]}
    else:
        _check_factor(body["rows"], factors, f"{where}.rows")
    _require(isinstance(body["columns"], list) and body["columns"], f"{where}.columns must be a non-empty list")
    columns = [_parse_column(c, f"{where}.columns[{j}]", factors) for j, c in enumerate(body["columns"])]
    labels = [c.label for c in columns]
    _require(len(set(labels)) == len(labels), f"{where}.columns: labels must be unique, got {labels}")
    for j, column in enumerate(columns):
        if column.kind in ("delta", "relative"):
            for ref in (column.a, column.b, column.relative_to):
                _require(ref is None or ref in labels, f"{where}.columns[{j}]: no column labelled {ref!r}")
    summary = list(body.get("summary_rows") or [])
    _require(set(summary) <= {"std_mae", "log_mae", "mean_relative"},
             f"{where}.summary_rows: choose from std_mae, log_mae, mean_relative")
    target_std = body.get("target_std", "runs")
    _require(target_std == "runs" or isinstance(target_std, dict),
             f"{where}.target_std must be 'runs' (σ of each target from the runs' run.json) or a mapping")
    bold = body.get("bold", "column")
    _require(bold in ("row", "column", "none"), f"{where}.bold must be row, column or none")
    table = TableSpec(name=str(body["name"]), rows=body["rows"], columns=columns, row_order=body.get("row_order"),
                      row_labels=dict(body.get("row_labels") or {}), bold=bold, summary_rows=summary,
                      target_std=target_std if isinstance(target_std, dict) else {},
                      caption=str(body.get("caption") or ""))
    return table, bool(set(summary) & {"std_mae", "log_mae"}) and target_std == "runs"


def _parse_column(body, where: str, factors: set[str]) -> ColumnSpec:
    _check_keys(body, COLUMN_KEYS, where)
    _require("label" in body, f"{where}: 'label' is required")
    kind = body.get("kind", "metric")
    _require(kind in COLUMN_KINDS, f"{where}.kind must be one of {list(COLUMN_KINDS)}")
    needs = {"metric": ("metric",), "delta": ("a", "b"), "relative": ("a", "b"), "paper": ("source", "key")}
    for key in needs.get(kind, ()):
        _require(key in body, f"{where}: kind {kind} needs {key!r}")
    better = body.get("better", "min")
    _require(better in ("min", "max"), f"{where}.better must be min or max")
    return ColumnSpec(label=str(body["label"]), kind=kind, metric=body.get("metric"),
                      where=_check_where(body.get("where"), factors, where), a=body.get("a"), b=body.get("b"),
                      relative_to=body.get("relative_to"), better=better, decimals=int(body.get("decimals", 3)),
                      source=body.get("source"), key=body.get("key"), row_map=dict(body.get("row_map") or {}))


def _parse_plot(body, where: str, factors: set[str]) -> PlotSpec:
    _require(isinstance(body, dict) and body.get("kind") in PLOT_KINDS,
             f"{where}.kind must be one of {sorted(PLOT_KINDS)}")
    _check_keys(body, PLOT_KINDS[body["kind"]], where)
    _require("name" in body, f"{where}: 'name' is required (the file stem under plots/)")
    kind = body["kind"]
    required = {"profiles": ("series",), "metric_vs_factor": ("metric", "x", "series"),
                "learning_curves": ("metric", "series")}[kind]
    for key in required:
        _require(key in body, f"{where}: kind {kind} needs {key!r}")
    for key in ("series", "x", "panels"):
        if body.get(key) is not None:
            _check_factor(body[key], factors, f"{where}.{key}")
    _require(isinstance(body.get("labels", {}), dict), f"{where}.labels must map series values to legend labels")
    return PlotSpec(name=str(body["name"]), kind=kind, series=body.get("series"), labels=dict(body.get("labels") or {}),
                    metric=body.get("metric"),
                    x=body.get("x"), panels=body.get("panels"), where=_check_where(body.get("where"), factors, where),
                    seed=body.get("seed"), xlabel=body.get("xlabel"), ylabel=body.get("ylabel"),
                    log=bool(body.get("log", True)))


def _parse_finding(body, where: str, factors: set[str]) -> Finding:
    _check_keys(body, FINDING_KEYS, where)
    for key in ("claim", "metric", "factor", "order"):
        _require(key in body, f"{where}: {key!r} is required")
    _check_factor(body["factor"], factors, f"{where}.factor")
    _require(isinstance(body["order"], list) and len(body["order"]) >= 2,
             f"{where}.order must list at least two values of {body['factor']!r}, best first")
    better = body.get("better", "min")
    _require(better in ("min", "max"), f"{where}.better must be min or max")
    first = None
    if body.get("stated_first") is not None:
        _require(isinstance(body["stated_first"], dict) and "stated_first" not in body["stated_first"],
                 f"{where}.stated_first must be a mapping of the keys that differed (claim, metric, order, ...)")
        merged = {**{k: v for k, v in body.items() if k != "stated_first"}, **body["stated_first"]}
        first = _parse_finding(merged, f"{where}.stated_first", factors)
    return Finding(claim=str(body["claim"]), metric=body["metric"], factor=body["factor"], order=tuple(body["order"]),
                   better=better, where=_check_where(body.get("where"), factors, where), stated_first=first)


def parse_findings(raw, where: str, factors: set[str]) -> list[Finding]:
    """A list of findings as the ``findings:`` key holds them (e.g. as stored with a study)."""
    _require(isinstance(raw, list), f"{where} must be a list of findings")
    return [_parse_finding(body, f"{where}[{i}]", factors) for i, body in enumerate(raw)]
