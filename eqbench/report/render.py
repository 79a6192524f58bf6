"""Render a :class:`~eqbench.report.tables.Table` as Markdown (GitHub), LaTeX (booktabs) or HTML.

Cells: ``mean ± std`` over seeds (mean alone for one seed), ``†`` plus ``(n/m)`` when only n of
m seeds finished, ``‡`` when runs were stopped by ``budget.max_time``, ``FAIL`` when all failed, ``—``
when nothing ran, ``n/a`` when the runs recorded no such value; the best value in bold.
Δ columns are signed; relative columns are percentages.
"""

from __future__ import annotations

import html

from eqbench.report.tables import TIME_LIMITED, Cell, ColumnSpec, Table

MISSING, FAILED, ABSENT = "—", "FAIL", "n/a"


def format_cell(cell: Cell, column: ColumnSpec, pm: str = "±") -> str:
    if cell.status == "missing":
        return MISSING
    if cell.status == "failed":
        return FAILED
    if cell.status == "absent":
        return ABSENT
    d = column.decimals
    if column.kind in ("parameters", "width"):
        text = f"{round(cell.mean):,}"
    elif column.kind == "delta":
        text = f"{cell.mean:+.{d}f}"
    elif column.kind == "relative":
        text = f"{100 * cell.mean:+.1f} %"
    elif column.kind == "paper":  # with the column's decimals: YAML keeps 0.420 as 0.42
        text = f"{round(cell.mean):,}" if float(cell.mean).is_integer() else f"{cell.mean:.{d}f}"
    else:
        text = f"{cell.mean:.{d}f}" + (f" {pm} {cell.std:.{d}f}" if cell.std is not None else "")
    if cell.status == "partial":
        text += f" † ({cell.n}/{cell.expected})"
    if cell.time_limited:
        text += f" {TIME_LIMITED}"
    return text


def _summary_column(table: Table, j: int) -> ColumnSpec:
    # Summary rows (std. MAE in %, logMAE) use two decimals whatever the column's own format.
    column = table.spec.columns[j]
    return ColumnSpec(label=column.label, kind="metric", decimals=2)


def _rows(table: Table, pm: str):
    n_data = len(table.row_keys) - len(table.spec.summary_rows)
    for i, (label, cells) in enumerate(zip(table.row_labels, table.cells)):
        own_format = i < n_data or table.spec.summary_rows[i - n_data] == "mean_relative"  # averages of % columns
        columns = table.spec.columns if own_format else [_summary_column(table, j) for j in range(len(cells))]
        yield label, [(format_cell(c, col, pm), c.bold) for c, col in zip(cells, columns)], i >= n_data


def seeds_caption(table: Table) -> str:
    # Metric columns only: a parameter count pooled over another factor (e.g. over cutoffs) is not a seed count.
    metric = [j for j, column in enumerate(table.spec.columns) if column.kind == "metric"]
    counts = sorted({row[j].expected for row in table.cells for j in metric if j < len(row) and row[j].expected})
    if not counts:
        return ""
    seeds = str(counts[-1]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"mean ± standard deviation over {seeds} seed{'s' if counts[-1] != 1 else ''}"


def to_markdown(table: Table) -> str:
    def bold(text, b):
        return f"**{text}**" if b and text not in (MISSING, FAILED) else text

    first = table.spec.rows
    lines = ["| " + " | ".join([first, *table.headers]) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(table.headers)) + "|"]
    for label, cells, _ in _rows(table, "±"):
        lines.append("| " + " | ".join([str(label), *(bold(t, b) for t, b in cells)]) + " |")
    notes = [n for n in ([table.spec.caption, seeds_caption(table)] + table.footnotes) if n]
    return "\n".join(lines) + ("\n\n" + "\n".join(f"_{n}_  " for n in notes) if notes else "") + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "Å": r"\AA{}", "²": r"$^2$", "³": r"$^3$",
          "±": r"$\pm$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "—": "---", "ρ": r"$\rho$",
          "Δ": r"$\Delta$", "μ": r"$\mu$", "α": r"$\alpha$",
          "ε": r"$\epsilon$", "–": "--", "⟨": r"$\langle$", "⟩": r"$\rangle$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def to_latex(table: Table) -> str:
    def cell(text, b):
        text = latex_escape(text)
        return rf"\textbf{{{text}}}" if b and text not in ("---", FAILED) else text

    lines = [r"\begin{table}", r"\centering", r"\begin{tabular}{l" + "r" * len(table.headers) + "}", r"\toprule",
             " & ".join([latex_escape(table.spec.rows), *map(latex_escape, table.headers)]) + r" \\", r"\midrule"]
    summary_started = False
    for label, cells, is_summary in _rows(table, "±"):
        if is_summary and not summary_started:
            lines.append(r"\midrule")
            summary_started = True
        lines.append(" & ".join([latex_escape(label), *(cell(t, b) for t, b in cells)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = [n for n in ([table.spec.caption, seeds_caption(table)] + table.footnotes) if n]
    if notes:
        lines.append(r"\caption{" + latex_escape(" ".join(notes)) + "}")
    lines += [rf"\label{{tab:{latex_escape(table.spec.name)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    def cell(text, b):
        text = html.escape(text)
        return f"<td><b>{text}</b></td>" if b and text not in (MISSING, FAILED) else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in [table.spec.rows, *table.headers])
    body = "".join(f"<tr><th>{html.escape(str(label))}</th>{''.join(cell(t, b) for t, b in cells)}</tr>"
                   for label, cells, _ in _rows(table, "±"))
    notes = [n for n in ([table.spec.caption, seeds_caption(table)] + table.footnotes) if n]
    caption = f"<caption>{html.escape(' '.join(notes))}</caption>" if notes else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


RENDERERS = {"md": to_markdown, "tex": to_latex, "html": to_html}
