"""Paper-style tables from sweep results.

A *record* is one finished (or failed) trial: its factor values, seed, state, metrics (with
units), parameter count and, when it failed, the reason. A :class:`TableSpec` says which factor
gives the rows and what each column shows; :func:`build_table` turns records into a
:class:`Table` of cells (mean ± standard deviation over seeds) that the renderers in
:mod:`eqbench.report.render` print as Markdown, LaTeX or HTML.

Layouts this expresses:

- PaiNN Tab. 4: rows = ablation variants; columns = parameters, width F, energy MAE, force MAE.
- Miller et al. Tab. 1: rows = targets; one MAE column per model, then ΔE_{X,Y} = X − Y and the
  relative difference (X − Y) / Z (Z = L0Net in the paper) between named columns.
- DimeNet Tab. 1: rows = targets plus the summary rows std. MAE and logMAE (App. C, Eqs. 10–11).
- Miller et al.'s average relative improvement: the summary row ``mean_relative``, the mean over the
  targets of each relative column (%E_{L1,L0} averaged: −23 % in the paper).

A cell with runs that ``budget.max_time`` stopped before ``max_epochs`` is marked ‡ with a legend.
Missing cells (no trial), failed cells (every trial failed) and absent values (finished runs that did
not record the metric) are marked, never dropped; a cell where only some seeds finished says how many did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from eqbench.errors import ConfigError

TIME_LIMITED = "‡"  # the mark of a cell with time-limited runs (tables, index.md, sweep status)
State = Literal["COMPLETE", "FAIL", "RUNNING", "WAITING", "PRUNED"]


@dataclass
class Record:
    factors: dict[str, object]
    seed: int
    state: str
    metrics: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)  # metric name -> unit
    n_parameters: int | None = None
    width: int | None = None  # parameter-matched width, when the sweep matched one
    reason: str | None = None
    run_dir: str | None = None  # the trial's run directory (profile.json, metrics.csv for plots)
    stop_reason: str | None = None  # how training ended (metrics.json): max_epochs, max_time, early_stopping, ...
    epochs: int | None = None
    earlier_failures: list[str] = field(default_factory=list)  # reasons of the cell's failed trials before this one


@dataclass
class ColumnSpec:
    """One column.

    kind ``metric``: ``metric`` is a metrics.json name, formatted with the record's factors (e.g.
    ``test_{target}_mae`` when rows are targets); ``where`` keeps records whose factors match.
    kind ``parameters`` / ``width``: the parameter count / matched width of the row's trials.
    kind ``delta``: mean(a) − mean(b) of two metric columns (by label); kind ``relative``: that
    difference divided by mean(``relative_to``), default b (Miller et al.'s %E uses L0Net).
    kind ``paper``: the published value ``key`` of table ``source`` in paper_values.yaml for the row
    (``row_map`` maps the sweep's row values to the paper's row names where they differ), shown with
    ``decimals`` (set it to the paper's own precision).
    """

    label: str
    kind: Literal["metric", "parameters", "width", "delta", "relative", "paper"] = "metric"
    metric: str | None = None
    where: dict[str, object] = field(default_factory=dict)
    a: str | None = None
    b: str | None = None
    relative_to: str | None = None
    better: Literal["min", "max"] = "min"
    decimals: int = 3
    source: str | None = None
    key: str | None = None
    row_map: dict = field(default_factory=dict)


@dataclass
class TableSpec:
    name: str
    rows: str  # factor whose values are the rows, in the order given by ``row_order`` or first seen
    columns: list[ColumnSpec]
    row_order: list | None = None
    row_labels: dict = field(default_factory=dict)
    bold: Literal["row", "column", "none"] = "column"
    summary_rows: list[Literal["std_mae", "log_mae", "mean_relative"]] = field(default_factory=list)
    target_std: dict = field(default_factory=dict)  # row value -> σ of that target (for summary rows)
    caption: str = ""


@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None
    n: int = 0  # seeds that finished
    expected: int = 0  # seeds that were run (finished or failed)
    # missing: no trial; absent: trials finished but recorded no such value (or the paper gives none)
    status: Literal["ok", "partial", "failed", "missing", "absent"] = "missing"
    bold: bool = False
    reasons: list[str] = field(default_factory=list)
    time_limited: int = 0  # finished runs of the cell that budget.max_time stopped before max_epochs


@dataclass
class Table:
    spec: TableSpec
    row_keys: list
    row_labels: list[str]
    headers: list[str]
    cells: list[list[Cell]]  # [row][column]
    footnotes: list[str] = field(default_factory=list)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1) over seeds; no std for a single seed."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def std_mae(maes: list[float], sigmas: list[float]) -> float:
    """DimeNet App. C, Eq. 10: mean over targets of MAE_m / σ_m."""
    return float(np.mean([m / s for m, s in zip(maes, sigmas)]))


def log_mae(maes: list[float], sigmas: list[float]) -> float:
    """DimeNet App. C, Eq. 11: mean over targets of log(MAE_m / σ_m) (natural log)."""
    return float(np.mean([math.log(m / s) for m, s in zip(maes, sigmas)]))


def _matches(record: Record, where: dict) -> bool:
    return all(record.factors.get(k) == v for k, v in where.items())


def _metric_name(column: ColumnSpec, record: Record) -> str:
    try:
        return column.metric.format(**record.factors)
    except KeyError as err:
        raise ConfigError(f"column {column.label!r}: metric {column.metric!r} names factor {err} that the "
                          f"sweep does not have; factors: {sorted(record.factors)}") from None


def _cell(records: list[Record], column: ColumnSpec) -> Cell:
    if not records:
        return Cell()
    done = [r for r in records if r.state == "COMPLETE"]
    failed = [r for r in records if r.state == "FAIL"]
    if column.kind == "metric":
        values = [r.metrics[_metric_name(column, r)] for r in done if _metric_name(column, r) in r.metrics]
    elif column.kind == "parameters":
        values = [r.n_parameters for r in done if r.n_parameters is not None]
    else:  # width
        values = [r.width for r in done if r.width is not None]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    cell = Cell(n=len(finite), expected=len(done) + len(failed), reasons=[r.reason or "failed" for r in failed])
    if column.kind == "metric":
        cell.time_limited = sum(r.stop_reason == "max_time" for r in done)
    if not finite:
        cell.status = "failed" if failed else "absent"
        return cell
    cell.mean, cell.std = mean_std(finite)
    cell.status = "ok" if cell.n == cell.expected else "partial"
    return cell


def _derived(column: ColumnSpec, by_label: dict[str, Cell]) -> Cell:
    names = [column.a, column.b] + ([column.relative_to or column.b] if column.kind == "relative" else [])
    for name in names:
        if name not in by_label:
            raise ConfigError(f"column {column.label!r}: no column labelled {name!r}; columns: {sorted(by_label)}")
    cells = [by_label[n] for n in names]
    if any(c.mean is None for c in cells):
        return Cell(status="missing")
    value = cells[0].mean - cells[1].mean
    if column.kind == "relative":
        value /= cells[2].mean
    return Cell(mean=value, n=min(c.n for c in cells), expected=min(c.expected for c in cells), status="ok")


def load_paper_values() -> dict:
    """The papers' published tables (eqbench/report/paper_values.yaml), by source name."""
    from importlib import resources

    import yaml

    return yaml.safe_load((resources.files("eqbench.report") / "paper_values.yaml").read_text(encoding="utf-8"))


def _paper_cell(column: ColumnSpec, row_key, papers: dict) -> Cell:
    if column.source not in papers:
        raise ConfigError(f"column {column.label!r}: unknown paper table {column.source!r}; choose one of "
                          f"{sorted(papers)}")
    row = papers[column.source]["rows"].get(column.row_map.get(row_key, row_key), {})
    value = row.get(column.key)
    return Cell(mean=float(value), status="ok") if value is not None else Cell(status="absent")


def _units(records: list[Record], column: ColumnSpec, papers: dict | None = None) -> set[str]:
    if column.kind == "paper" and papers:
        unit = papers.get(column.source, {}).get("units", {}).get(column.key)
        return {unit} if unit else set()
    if column.kind != "metric":
        return set()
    return {r.units.get(_metric_name(column, r), "") for r in records if _matches(r, column.where)} - {""}


def build_table(spec: TableSpec, records: list[Record]) -> Table:
    if not spec.columns:
        raise ConfigError(f"table {spec.name!r}: no columns")
    if records and not any(spec.rows in r.factors for r in records):
        # Rows that are not a factor (targets of multi-target runs): every record serves every row, and the
        # row value fills the braces of metric names (``test_{target}_mae``).
        if not spec.row_order:
            raise ConfigError(f"table {spec.name!r}: rows {spec.rows!r} is not a factor of the sweep; list the "
                              f"rows in row_order (e.g. the targets)")
        records = [replace(r, factors={**r.factors, spec.rows: key}) for key in spec.row_order for r in records]
    row_keys = list(spec.row_order or dict.fromkeys(r.factors.get(spec.rows) for r in records))
    metric_columns = [c for c in spec.columns if c.kind in ("metric", "parameters", "width")]
    papers = load_paper_values() if any(c.kind == "paper" for c in spec.columns) else {}
    column_units = {c.label: _units(records, c, papers) for c in spec.columns}
    row_units = {}
    for key in row_keys:  # units that differ between rows (targets) go into the row label
        mine = [r for r in records if r.factors.get(spec.rows) == key]
        units = set().union(*(_units(mine, c) for c in spec.columns if c.kind == "metric")) if mine else set()
        row_units[key] = units.pop() if len(units) == 1 else ""
    per_row_unit = any(len(u) > 1 for u in column_units.values())

    cells = []
    for key in row_keys:
        mine = [r for r in records if r.factors.get(spec.rows) == key]
        by_label = {c.label: _cell([r for r in mine if _matches(r, c.where)], c) for c in metric_columns}
        by_label.update({c.label: _paper_cell(c, key, papers) for c in spec.columns if c.kind == "paper"})
        cells.append([by_label[c.label] if c.label in by_label else _derived(c, by_label) for c in spec.columns])
    _bold(spec, cells)

    headers = []
    for c in spec.columns:
        unit = next(iter(column_units[c.label])) if len(column_units[c.label]) == 1 and not per_row_unit else ""
        headers.append(f"{c.label} ({unit})" if unit else c.label)
    labels = []
    for key in row_keys:
        label = str(spec.row_labels.get(key, key))
        labels.append(f"{label} ({row_units[key]})" if per_row_unit and row_units[key] else label)
    table = Table(spec, row_keys, labels, headers, cells)
    _footnotes(table)  # before the summary rows, whose Δ cells are blank by design
    for source in dict.fromkeys(c.source for c in spec.columns if c.kind == "paper"):
        table.footnotes.append(f"Published values ({', '.join(c.label for c in spec.columns if c.source == source)})"
                               f": {papers[source].get('citation', source)}.")
    _summary_rows(spec, table)
    return table


def _bold(spec: TableSpec, cells: list[list[Cell]]) -> None:
    """Mark the best mean of each column (or row) among metric columns."""
    if spec.bold == "none" or not cells:
        return
    metric_idx = [j for j, c in enumerate(spec.columns) if c.kind == "metric"]
    groups = ([[(i, j) for i in range(len(cells))] for j in metric_idx] if spec.bold == "column"
              else [[(i, j) for j in metric_idx] for i in range(len(cells))])
    for group in groups:
        scored = [(cells[i][j].mean, i, j) for i, j in group if cells[i][j].mean is not None]
        if len(scored) < 2:
            continue
        better = spec.columns[scored[0][2]].better
        best = (min if better == "min" else max)(s[0] for s in scored)
        for value, i, j in scored:
            cells[i][j].bold = value == best


def _summary_rows(spec: TableSpec, table: Table) -> None:
    """DimeNet's std. MAE and logMAE per metric column, over the rows (targets) that have σ; Miller et al.'s
    average of each relative column over the rows (``mean_relative``)."""
    targets = list(table.row_keys)  # the data rows, before any summary row is appended
    data_cells = list(table.cells)
    for kind in spec.summary_rows:
        if kind == "mean_relative":
            row = []
            for j, column in enumerate(spec.columns):
                values = [cells[j].mean for cells in data_cells]
                if column.kind != "relative" or not values or any(v is None for v in values):
                    row.append(Cell(status="missing"))
                else:
                    row.append(Cell(mean=float(np.mean(values)), status="ok", n=1, expected=1))
            table.cells.append(row)
            table.row_labels.append("average")
            table.row_keys.append(kind)
            continue
        missing = [k for k in targets if k not in spec.target_std]
        if missing:
            raise ConfigError(f"table {spec.name!r}: summary row {kind!r} needs target_std for {missing}")
        row = []
        for j, column in enumerate(spec.columns):
            maes = [cells[j].mean for cells in data_cells]
            if column.kind != "metric" or any(m is None for m in maes):
                row.append(Cell(status="missing"))
                continue
            sigmas = [float(spec.target_std[k]) for k in targets]
            value = std_mae(maes, sigmas) * 100 if kind == "std_mae" else log_mae(maes, sigmas)
            row.append(Cell(mean=value, status="ok", n=1, expected=1))
        table.cells.append(row)
        table.row_labels.append("std. MAE (%)" if kind == "std_mae" else "logMAE")
        table.row_keys.append(kind)


def _footnotes(table: Table) -> None:
    cells = [c for row in table.cells for c in row]
    if any(c.status == "partial" for c in cells):
        table.footnotes.append("† only some seeds finished: the cell gives the mean of those (n/m shown).")
    if any(c.status == "failed" for c in cells):
        reasons = sorted({r for c in cells if c.status == "failed" for r in c.reasons})
        table.footnotes.append("FAIL: every trial of the cell failed" + (f" ({'; '.join(reasons)})" if reasons else "")
                               + ".")
    if any(c.time_limited for c in cells):
        table.footnotes.append(f"{TIME_LIMITED} some runs of the cell were stopped by budget.max_time before "
                               f"max_epochs: cut short, so the value depends on the machine's speed and load.")
    if any(c.status == "missing" for c in cells):
        table.footnotes.append("— no trial for this cell (not run yet).")
    if any(c.status == "absent" for c in cells):
        table.footnotes.append("n/a: no such value (the finished runs did not record it, or the paper gives none).")
