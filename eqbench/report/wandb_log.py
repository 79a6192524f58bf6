"""Log a report to W&B: one run (job type ``report``, in the sweep's group) holding each table as a
``wandb.Table`` and each plot as an image. Offline by default (``wandb sync`` later); any W&B failure
is a warning, never a failed report."""

from __future__ import annotations

import warnings
from pathlib import Path

from eqbench.report.build import Report
from eqbench.report.render import format_cell


def table_rows(report: Report, name: str) -> tuple[list[str], list[list]]:
    """Columns and rows of a report table for W&B: the row label, each column's mean (a number, None
    when missing or failed), its standard deviation and the formatted text as the report shows it."""
    table = report.tables[name]
    columns = [table.spec.rows]
    for header in table.headers:
        columns += [header, f"{header} std", f"{header} text"]
    rows = []
    for label, cells in zip(table.row_labels, table.cells):
        row = [str(label)]
        for cell, column in zip(cells, table.spec.columns):
            row += [cell.mean, cell.std, format_cell(cell, column)]
        rows.append(row)
    return columns, rows


def log_report(report: Report, mode: str = "offline", project: str = "eqbench", directory: str | Path | None = None,
               config: dict | None = None) -> str | None:
    """Log ``report`` to a W&B run; returns the run's local directory, or None when disabled or failed."""
    if mode == "disabled":
        return None
    try:
        import wandb

        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=project, group=report.name, job_type="report", name=f"report-{report.name}",
                         dir=str(directory) if directory is not None else None, mode=mode,
                         config=config or {}, tags=["report"], settings=wandb.Settings(silent=True))
        try:
            for name in report.tables:
                columns, rows = table_rows(report, name)
                run.log({f"table/{name}": wandb.Table(columns=columns, data=rows)})
            for name, files in report.plots.items():
                png = next((f for f in files if f.suffix == ".png"), None)
                if png is not None:
                    run.log({f"plot/{name}": wandb.Image(str(report.out / png))})
            for i, result in enumerate(report.findings):
                run.summary[f"finding/{i}"] = f"{result.finding.claim}: {result.verdict} ({result.detail})"
            run.summary["report/index"] = str(report.index)
            where = Path(run.dir).parent
            print(f"W&B report run: {where}" + (f" (upload with `wandb sync {where}`)" if mode == "offline" else ""))
            return str(run.dir)
        finally:
            run.finish()
    except Exception as err:  # noqa: BLE001 - W&B must never fail a report; the folder is already written
        warnings.warn(f"W&B logging of report {report.name!r} failed ({type(err).__name__}: {err}); the report in "
                      f"{report.out} is complete", stacklevel=2)
        return None
