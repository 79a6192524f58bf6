"""``eqbench report``: a sweep's study and run directories → ``reports/<name>/``.

The folder holds ``index.md`` (what was run, the findings, the tables and the plots, readable on
GitHub), ``tables/<table>.md|tex|html``, ``plots/<plot>.png|svg`` and ``records.json`` (one entry per
cell: factors, seed, state, metrics, parameters, run directory). It is built in a temporary folder and
swapped in whole, so a report is never half-written.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import optuna

from eqbench.errors import ConfigError, StorageError
from eqbench.report import plots as plotting
from eqbench.report.render import RENDERERS, to_markdown
from eqbench.report.spec import Finding, PlotSpec, ReportSpec, parse_findings, parse_report
from eqbench.report.study import records_from_study
from eqbench.report.tables import ColumnSpec, Record, Table, TableSpec, build_table, mean_std

FORMATS = tuple(RENDERERS)


@dataclass
class FindingResult:
    finding: Finding
    verdict: str  # holds | holds on the means only | holds, single seed | does not hold | undecided
    detail: str
    first: FindingResult | None = None  # the claim as first stated (``stated_first``), judged on the same runs


@dataclass
class Report:
    name: str
    out: Path
    title: str
    tables: dict[str, Table] = field(default_factory=dict)
    plots: dict[str, list[Path]] = field(default_factory=dict)  # name -> files (relative to out)
    findings: list[FindingResult] = field(default_factory=list)
    changed_findings: list[FindingResult] = field(default_factory=list)  # the spec's, where they differ from stored
    findings_origin: str = ""  # where the judged findings come from (stored with the study, or the spec)
    summary: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def index(self) -> Path:
        return self.out / "index.md"


# ------------------------------------------------------------------------------------------- records
def report_spec_of(sweep) -> ReportSpec:
    factors = {f.name for f in sweep.grid} | {"seed"}
    return parse_report(sweep.report, str(sweep.path), factors)


def default_tables(sweep, records: list[Record]) -> list[TableSpec]:
    """Without a ``report.tables`` section: rows = the first factor; columns = parameters (and the matched
    width), then the objective and every test MAE, once per combination of the other factors."""
    if not sweep.grid:
        return []
    rows, others = sweep.grid[0], sweep.grid[1:]
    metrics = [sweep.objective.metric] + sorted({m for r in records for m in r.metrics
                                                 if m.startswith("test_") and m.endswith("_mae")}
                                                - {sweep.objective.metric})
    better = "max" if sweep.objective.direction == "maximize" else "min"
    columns = [ColumnSpec("Parameters", kind="parameters")]
    if sweep.match is not None:
        columns.append(ColumnSpec(sweep.match.width, kind="width"))
    for combo in itertools.product(*(f.choices for f in others)):
        where = {f.name: c for f, c in zip(others, combo)}
        suffix = f" [{', '.join(f'{k} = {v}' for k, v in where.items())}]" if where else ""
        for metric in metrics:
            columns.append(ColumnSpec(metric + suffix, metric=metric, where=where,
                                      better=better if metric == sweep.objective.metric else "min"))
    return [TableSpec(name="results", rows=rows.name, columns=columns)]


def _rows_in_grid_order(table: TableSpec, sweep) -> TableSpec:
    # Rows default to every value of the factor the sweep declares, so a value with no trial is shown
    # as missing instead of silently absent.
    if table.row_order is None:
        factor = next((f for f in sweep.grid if f.name == table.rows), None)
        if factor is not None:
            table.row_order = list(factor.choices)
        elif table.rows == "seed":
            table.row_order = list(sweep.seeds)
    return table


def run_infos(records: list[Record]) -> list[dict]:
    """The run.json of each record's run directory (runs without one are skipped)."""
    paths = [Path(r.run_dir) / "run.json" for r in records if r.run_dir]
    return [json.loads(p.read_text()) for p in paths if p.is_file()]


def target_std_from_runs(runs: list[dict]) -> dict[str, float]:
    """σ of each target over the test split, as each run's run.json records it (the mean over runs)."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for name, sigma in run.get("data", {}).get("target_std", {}).items():
            values.setdefault(name, []).append(float(sigma))
    return {name: float(sum(v) / len(v)) for name, v in values.items()}


# ------------------------------------------------------------------------------------------- findings
def judge_findings(sweep, study: optuna.Study, spec: ReportSpec, records: list[Record]):
    """The findings stored with the study when it was created, judged; the spec's own where they differ.

    Returns (judged, changed, origin): ``changed`` holds the spec's findings that are not among the stored
    ones (claims reworded, moved to another metric or order after the sweep started), judged on the same
    runs; ``origin`` says which findings were judged."""
    stored_raw = study.user_attrs.get("findings")
    if stored_raw is None:
        origin = ("The study predates stored findings, so these are the spec's findings as they are now."
                  if spec.findings else "")
        return [check_finding(f, records) for f in spec.findings], [], origin
    factors = {f.name for f in sweep.grid} | {"seed"}
    factors |= {f.get("factor") for f in stored_raw if isinstance(f, dict)}
    factors |= {k for f in stored_raw if isinstance(f, dict) for k in (f.get("where") or {})}
    stored = parse_findings(stored_raw, f"study {sweep.study_name}: stored findings", factors)
    created = study.user_attrs.get("created")
    when = f" ({created})" if created else ""
    judged = [check_finding(f, records) for f in stored]
    changed = [check_finding(f, records) for f in spec.findings if f not in stored]
    removed = [f for f in stored if f not in spec.findings]
    if not changed and not removed:
        return judged, [], (f"Fixed before the results: stored with the study when the sweep started{when}, "
                            f"unchanged since." if stored else "")
    origin = (f"**The claims were changed after the sweep started.** The verdicts below judge the findings as "
              f"stored with the study when it was created{when}; the spec's current findings differ "
              f"({len(changed)} new or reworded, {len(removed)} of the stored ones changed or dropped) and are "
              f"judged on the same runs under 'Changed after the sweep started'.")
    return judged, changed, origin


def check_finding(finding: Finding, records: list[Record]) -> FindingResult:
    """:func:`check_ordering` of the finding, and of its ``stated_first`` version when it has one."""
    result = check_ordering(finding, records)
    if finding.stated_first is not None:
        result.first = check_ordering(finding.stated_first, records)
    return result


def check_ordering(finding: Finding, records: list[Record]) -> FindingResult:
    """Does each value in ``finding.order`` beat the next on the mean over seeds? It *holds* when every
    gap is larger than the two standard deviations together, *holds on the means only* when some gap
    is not, and *holds, single seed* when a value has one seed (no spread to judge by).

    Grid factors that the finding neither compares nor fixes (e.g. the molecule of a claim about lmax) are
    not pooled: their spread is not a seed spread. The ordering is judged within each combination of their
    values, and the finding holds (beyond the spread) only where it does so in every one of them."""
    done = [r for r in records if r.state == "COMPLETE" and all(r.factors.get(k) == v for k, v in finding.where.items())
            and finding.metric in r.metrics and math.isfinite(r.metrics[finding.metric])]
    free = sorted(k for k in {k for r in done for k in r.factors} - {finding.factor, "seed", *finding.where}
                  if len({repr(r.factors.get(k)) for r in done}) > 1)
    if not free:
        return _judge_stratum(finding, done, "")
    strata: dict[tuple, list[Record]] = {}
    for r in done:
        strata.setdefault(tuple(r.factors.get(k) for k in free), []).append(r)
    results = [_judge_stratum(finding, rs, ", ".join(f"{k} = {v}" for k, v in zip(free, key)))
               for key, rs in strata.items()]
    verdicts = {r.verdict for r in results}
    detail = "; ".join(r.detail for r in results)
    for verdict in ("undecided", "does not hold", "holds, single seed", "holds on the means only"):
        if verdict in verdicts:
            return FindingResult(finding, verdict, f"judged per {', '.join(free)}: {detail}")
    return FindingResult(finding, "holds", f"judged per {', '.join(free)}: {detail}")


def _judge_stratum(finding: Finding, done: list[Record], stratum: str) -> FindingResult:
    stats, unit = [], ""
    for value in finding.order:
        mine = [r for r in done if r.factors.get(finding.factor) == value]
        if not mine:
            where = f" ({stratum})" if stratum else ""
            return FindingResult(finding, "undecided", f"no finished trial for {finding.factor} = {value}{where}")
        unit = unit or mine[0].units.get(finding.metric, "")
        mean, std = mean_std([r.metrics[finding.metric] for r in mine])
        stats.append((value, mean, std, len(mine)))
    ok, clear = True, True
    parts = [f"{value}: {mean:.4g}" + (f" ± {std:.2g}" if std is not None else "") + f" (n = {n})"
             for value, mean, std, n in stats]
    text = f"{stratum}: {parts[0]}" if stratum else parts[0]
    for (_, m1, s1, _), (_, m2, s2, _), part in zip(stats, stats[1:], parts[1:]):
        ok &= m1 > m2 if finding.better == "max" else m1 < m2
        clear &= s1 is not None and s2 is not None and abs(m1 - m2) > s1 + s2
        text += f" {'<' if m1 < m2 else '>' if m1 > m2 else '='} {part}"  # the relation as measured
    where = ", ".join(f"{k} = {v}" for k, v in finding.where.items())
    detail = text + f" — {finding.metric}{f' ({unit})' if unit else ''}" + (f", {where}" if where else "")
    if not ok:
        return FindingResult(finding, "does not hold", detail)
    if clear:
        return FindingResult(finding, "holds", f"{detail} (beyond the seed spread)")
    if any(s[2] is None for s in stats):
        return FindingResult(finding, "holds, single seed", f"{detail} (one seed: no spread to judge by)")
    return FindingResult(finding, "holds on the means only", f"{detail} (within the seed spread)")


# ------------------------------------------------------------------------------------------- plots
def _select(records: list[Record], where: dict, seed: int | None = None) -> list[Record]:
    done = [r for r in records if r.state == "COMPLETE" and r.run_dir
            and all(r.factors.get(k) == v for k, v in where.items())]
    if seed is None and done:
        seed = min(r.seed for r in done)
    return [r for r in done if r.seed == seed]


def _profile(record: Record) -> dict | None:
    path = Path(record.run_dir) / "profile.json"
    return json.loads(path.read_text()) if path.is_file() else None


def make_plot(plot: PlotSpec, sweep, records: list[Record], path: Path) -> list[Path]:
    """Draw one plot of the report spec; returns the files written (empty when nothing to draw)."""
    if plot.kind == "profiles":
        panel_values = [None] if plot.panels is None else _choices(sweep, plot.panels)
        panels = {}
        for value in panel_values:
            where = plot.where if value is None else {**plot.where, plot.panels: value}
            results = {_label(plot, r): p for r in _select(records, where, plot.seed)
                       if (p := _profile(r)) is not None}
            if results:
                panels[f"{plot.panels} = {value}" if value is not None else sweep.study_name] = results
        return plotting.plot_profile_panels(panels, path) if panels else []
    if plot.kind == "metric_vs_factor":
        series: dict[str, dict[float, list[float]]] = {}
        unit = ""
        for r in records:
            if r.state != "COMPLETE" or plot.metric not in r.metrics or \
                    not all(r.factors.get(k) == v for k, v in plot.where.items()):
                continue
            series.setdefault(_label(plot, r), {}).setdefault(_as_number(r.factors[plot.x]), []).append(
                r.metrics[plot.metric])
            unit = unit or r.units.get(plot.metric, "")
        if not series:
            return []
        ylabel = plot.ylabel or (f"{plot.metric} ({unit})" if unit else plot.metric)
        return plotting.plot_metric_vs_factor(series, plot.xlabel or plot.x, ylabel, path)
    runs = {_label(plot, r): r.run_dir for r in _select(records, plot.where, plot.seed)
            if (Path(r.run_dir) / "metrics.csv").is_file()}
    if not runs:
        return []
    return plotting.plot_learning_curves(runs, plot.metric, path, ylabel=plot.ylabel, log=plot.log)


def _as_number(value):
    """A factor value on a numeric axis: variant names such as "1000" (grid variants are named by strings)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _label(plot: PlotSpec, record: Record) -> str:
    value = record.factors[plot.series]
    return str(plot.labels.get(value, value))


def _choices(sweep, factor: str) -> list:
    return list(next(f.choices for f in sweep.grid if f.name == factor))


def default_plots(sweep) -> list[PlotSpec]:
    if not sweep.grid:
        return []
    return [PlotSpec(name="learning_curves", kind="learning_curves", metric="val_loss", series=sweep.grid[0].name)]


# ------------------------------------------------------------------------------------------- what was run
def run_summary(sweep, study: optuna.Study, records: list[Record], runs: list[dict]) -> dict:
    trials = [t for t in study.get_trials(deepcopy=False) if "factors" in t.user_attrs]
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    busy = sum(float(t.user_attrs.get("duration_s", 0.0)) for t in trials)
    hardware, commits, dirty = {}, {}, {}
    for run in runs:
        described = _describe_hardware(run)
        hardware[described] = hardware.get(described, 0) + 1
        if run.get("git_commit"):
            commits[run["git_commit"]] = commits.get(run["git_commit"], 0) + 1
        if run.get("git_dirty"):
            dirty.setdefault(run.get("git_diff_sha256") or "?", set()).update(run.get("git_dirty_files") or [])
    cells = len(sweep.cells())
    states = [r.state for r in records]
    return {
        "study": sweep.study_name, "cells": cells, "complete": states.count("COMPLETE"),
        "failed": states.count("FAIL"), "missing": cells - len(records),
        "trial_time_min": round(busy / 60, 1),
        "span_min": round((max(ends) - min(starts)).total_seconds() / 60, 1) if starts and ends else None,
        "hardware": hardware, "commits": sorted(c[:12] for c in commits),
        "commit_runs": {c[:12]: n for c, n in sorted(commits.items())},
        "package_differences": package_differences(sorted(commits)),
        "dirty": {h[:12]: sorted(f for f in files if f.startswith(PACKAGE_DIR)) for h, files in dirty.items()},
        "time_limited": [_cell_label(r) for r in records if r.state == "COMPLETE" and r.stop_reason == "max_time"],
        "stop_reasons": _count(r.stop_reason or "not recorded" for r in records if r.state == "COMPLETE"),
        "retried": [(_cell_label(r), r.earlier_failures[0], len(r.earlier_failures)) for r in records
                    if r.state == "COMPLETE" and r.earlier_failures],
    }


PACKAGE_DIR = "eqbench/"


def package_differences(commits: list[str]) -> dict[str, list[str] | None]:
    """For each commit after the first: the files under eqbench/ that differ from the first commit (None when
    this checkout cannot tell, e.g. the commit is not in it)."""
    from eqbench.tracking import changed_files

    if len(commits) < 2:
        return {}
    return {c[:12]: changed_files(commits[0], c, PACKAGE_DIR) for c in commits[1:]}


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def _cell_label(record: Record) -> str:
    return ", ".join([f"{k} = {v}" for k, v in record.factors.items()] + [f"seed {record.seed}"])


def _describe_hardware(run: dict) -> str:
    hw = run.get("hardware") or {}
    accelerator = str(run.get("accelerator", "")).replace("Accelerator", "")
    if hw.get("gpus"):
        return f"{run.get('devices', 1)} × {hw['gpus'][0]} ({accelerator})"
    if hw:
        return f"{hw.get('cpu', '?')}, {hw.get('cpu_count', '?')} cores, torch threads per run: " \
               f"{hw.get('torch_threads', '?')} ({accelerator or 'CPU'})"
    return f"{run.get('host', '?')} ({accelerator or '?'})"


# ------------------------------------------------------------------------------------------- the report
def build_report(sweep, study: optuna.Study, out: str | Path, formats=("md", "tex", "html"),
                 command: str | None = None) -> Report:
    """Write ``out`` (index.md, tables/, plots/, records.json) for ``sweep``'s study; see the module doc."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ConfigError(f"--format: unknown format(s) {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    spec = report_spec_of(sweep)
    records = records_from_study(study)
    out = Path(out)
    report = Report(name=sweep.study_name, out=out, title=spec.title or f"Sweep {sweep.study_name}")
    work = out.with_name(f"{out.name}.tmp-{datetime.now():%H%M%S%f}")
    shutil.rmtree(work, ignore_errors=True)
    (work / "tables").mkdir(parents=True)
    try:
        tables = spec.tables or default_tables(sweep, records)
        runs = run_infos(records)
        sigmas = target_std_from_runs(runs) if spec.target_std_from_runs else {}
        for table_spec in tables:
            table_spec = _rows_in_grid_order(table_spec, sweep)
            if table_spec.name in spec.target_std_from_runs:
                table_spec.target_std = sigmas
            report.tables[table_spec.name] = table = build_table(table_spec, records)
            for fmt in formats:
                (work / "tables" / f"{table_spec.name}.{fmt}").write_text(RENDERERS[fmt](table), encoding="utf-8")
        for plot in spec.plots or default_plots(sweep):
            files = make_plot(plot, sweep, records, work / "plots" / plot.name)
            if files:
                report.plots[plot.name] = [f.relative_to(work) for f in files]
            else:
                report.warnings.append(f"plot {plot.name!r}: no finished run has what it needs yet")
        report.findings, report.changed_findings, report.findings_origin = judge_findings(sweep, study, spec,
                                                                                            records)
        stored_objective = study.user_attrs.get("objective")
        if stored_objective and stored_objective != sweep.objective.metric:
            report.warnings.append(f"the objective was {stored_objective} when the study was created; the spec now "
                                   f"says {sweep.objective.metric}")
        report.summary = run_summary(sweep, study, records, runs)
        (work / "records.json").write_text(json.dumps([_portable(r) for r in records], indent=1, default=str))
        (work / "index.md").write_text(render_index(report, sweep, formats, command, spec.notes), encoding="utf-8")
        _swap_in(work, out)
    except OSError as err:  # e.g. a full disk: the report was built aside, so the previous one is intact
        raise StorageError(f"could not write report {out} ({err.strerror or err}"
                           f"{': ' + str(err.filename) if err.filename else ''}); free disk space and run it again "
                           f"(the previous report is kept)") from err
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _portable(record: Record) -> dict:
    # Run directories relative to the working directory where they lie under it, so that a committed
    # report does not carry the machine's absolute paths.
    data = asdict(record)
    if record.run_dir:
        try:
            data["run_dir"] = Path(record.run_dir).resolve().relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            pass
    return data


def _swap_in(work: Path, out: Path) -> None:
    old = out.with_name(f"{out.name}.tmp-old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    work.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def sweep_command(sweep) -> str:
    return f"eqbench sweep run {sweep.path}" + (f" --profile {sweep.profile}" if sweep.profile else "")


def render_index(report: Report, sweep, formats, command: str | None, notes: str = "") -> str:
    s = report.summary
    lines = [f"# {report.title}", ""]
    description = " ".join((sweep.description or "").split())
    if description:
        lines += [description, ""]
    hardware = "; ".join(f"{desc} ({n} run{'s' if n != 1 else ''})" for desc, n in s["hardware"].items()) or "—"
    wall = f"{s['trial_time_min']} min of trials" + (f", {s['span_min']} min from first start to last end"
                                                     if s["span_min"] is not None else "")
    profile = f"profile `{sweep.profile}`" if sweep.profile else "no profile"
    lines += ["## What was run", "",
              f"- Sweep: `{sweep_command(sweep)}` — spec [`{sweep.path}`]({_relative_link(sweep.path, report.out)}), "
              f"{profile}, study `{s['study']}`",
              f"- Cells: {s['cells']} ({s['complete']} complete, {s['failed']} failed, {s['missing']} not run)",
              f"- Hardware: {hardware}",
              f"- Wall time: {wall}",
              f"- eqbench commit of the runs: {_commits_line(s)}",
              *_provenance_lines(s),
              f"- Report: `{command or f'eqbench report {sweep.path}'}` on {datetime.now():%Y-%m-%d}", ""]
    if report.findings:
        lines += ["## Findings", "", "Each claim of the paper, checked on this sweep's means over seeds."
                  + (f" {report.findings_origin}" if report.findings_origin else ""), ""]
        lines += _finding_lines(report.findings)
        lines.append("")
    if report.changed_findings:
        lines += ["### Changed after the sweep started", "",
                  "The spec's current findings that differ from those stored with the study, judged on the same "
                  "runs:", ""]
        lines += _finding_lines(report.changed_findings)
        lines.append("")
    if notes:
        lines += ["## Notes", "", notes, ""]
    for name, table in report.tables.items():
        links = " · ".join(f"[{fmt}](tables/{name}.{fmt})" for fmt in formats if fmt != "md")
        lines += [f"## Table: {name}", "", to_markdown(table).rstrip(), ""]
        if links:
            lines += [f"Also as {links}.", ""]
    for name, files in report.plots.items():
        png = next((f for f in files if f.suffix == ".png"), files[0])
        lines += [f"## Plot: {name}", "", f"![{name}]({png.as_posix()})", ""]
    for warning in report.warnings:
        lines += [f"_{warning}_  "]
    return "\n".join(lines).rstrip() + "\n"


def _finding_lines(results: list[FindingResult]) -> list[str]:
    lines = []
    for result in results:
        lines.append(f"- {result.finding.claim} — **{result.verdict}**: {result.detail}")
        if result.first is not None:
            first = result.first
            lines.append(f"  - As first stated, before it was changed after results were seen: "
                         f"\"{first.finding.claim}\" — **{first.verdict}**: {first.detail}")
    return lines


def _commits_line(s: dict) -> str:
    runs = s.get("commit_runs") or {}
    if not runs:
        return ", ".join(f"`{c}`" for c in s["commits"]) or "—"
    return ", ".join(f"`{c}` ({n} run{'s' if n != 1 else ''})" for c, n in runs.items())


def _provenance_lines(s: dict) -> list[str]:
    lines = []
    differences = s.get("package_differences") or {}
    first = s["commits"][0] if s.get("commits") else ""
    for commit, files in differences.items():
        if files is None:
            lines.append(f"- **Warning:** runs come from different commits; whether `{commit}` differs from `{first}` "
                         f"under eqbench/ cannot be checked here (the commit is not in this checkout)")
        elif files:
            shown = ", ".join(f"`{f}`" for f in files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
            lines.append(f"- **Warning:** the runs' code differs: `{commit}` changes {shown} against `{first}`")
        else:
            lines.append(f"- Commits `{first}` and `{commit}` have the same files under eqbench/")
    for diff_hash, files in (s.get("dirty") or {}).items():
        what = f"uncommitted changes under eqbench/: {', '.join(f'`{f}`' for f in files)}" if files else \
            "uncommitted changes outside eqbench/"
        lines.append(f"- {'**Warning:** ' if files else ''}runs from a dirty tree (diff sha256 `{diff_hash}`), {what}")
    limited = s.get("time_limited")
    if limited is not None:
        reasons = ", ".join(f"{n} {reason}" for reason, n in (s.get("stop_reasons") or {}).items())
        if limited:
            lines.append(f"- Time-limited runs (‡, stopped by budget.max_time before max_epochs, so their numbers "
                         f"depend on the machine's speed and load): {len(limited)} — {'; '.join(limited)}")
        else:
            lines.append(f"- Time-limited runs: none (how the runs ended: {reasons or '—'})")
    retried = s.get("retried")
    if retried is not None:
        if retried:
            lines.append(f"- Cells that failed and then succeeded on retry: {len(retried)}")
            lines += [f"  - {cell}: {n} failed attempt{'s' if n != 1 else ''}, first: {reason}"
                      for cell, reason, n in retried]
        else:
            lines.append("- Cells that failed and then succeeded on retry: none")
    return lines


def _relative_link(path: Path, out: Path) -> str:
    import os

    try:
        return Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).as_posix()


def print_report(report: Report, stream=None) -> None:
    stream = stream or sys.stdout
    for name, table in report.tables.items():
        print(f"\n{name}\n" + to_markdown(table), file=stream)
    if report.changed_findings:
        print("findings as stored with the study (the spec's were changed after the sweep started):", file=stream)
    for result in report.findings:
        print(f"- {result.finding.claim}: {result.verdict} ({result.detail})", file=stream)
        if result.first is not None:
            print(f"  as first stated: {result.first.finding.claim}: {result.first.verdict}", file=stream)
    if report.changed_findings:
        print("the spec's current findings:", file=stream)
    for result in report.changed_findings:
        print(f"- {result.finding.claim}: {result.verdict} ({result.detail})", file=stream)
    for warning in report.warnings:
        print(f"warning: {warning}", file=stream)
    print(f"\nreport: {report.index}", file=stream)
