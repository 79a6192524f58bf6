"""Output of ``eqbench bench``: the table, the JSON record, and ``--report DIR`` (Markdown + plots)."""

from __future__ import annotations

import json
import os
from pathlib import Path

OP_NAMES = {"forward": "forward (energy)", "energy_forces": "energy + forces", "train_step": "training step",
            "batch_assembly": "batch assembly"}


def _fmt(t: dict | None) -> str:
    if not t:
        return "—"
    return f"{t['median_ms']:.1f} ({t['q25_ms']:.1f}–{t['q75_ms']:.1f})"


def ratios(record: dict, clock: str = "times") -> list[dict]:
    """peer median / eqbench median for every (model, case, batch size, op) where both ran (> 1: eqbench faster)."""
    out = []
    results = record["results"]
    for r in results:
        if r["implementation"].startswith("eqbench") or r["skipped"]:
            continue
        base = next((b for b in results if b["implementation"].startswith("eqbench") and b["model"] == r["model"]
                     and b["case"] == r["case"] and b["batch_size"] == r["batch_size"]
                     and b["n_atoms"] == r["n_atoms"]), None)
        if base is None:
            continue
        for op, t in r[clock].items():
            if op in base[clock]:
                out.append({"model": r["model"], "peer": r["implementation"], "case": r["case"],
                            "batch_size": r["batch_size"], "op": op,
                            "ratio": t["median_ms"] / base[clock][op]["median_ms"]})
    return out


def table(record: dict, clock: str = "times") -> str:
    """Markdown table: one row per (model, case, batch, implementation); median (IQR) in ms, ratio to eqbench."""
    ops = record["settings"]["ops"]
    head = ["model", "structures", "atoms", "edges", "implementation", "parameters",
            *[f"{OP_NAMES[o]} ms" for o in ops], *[f"{OP_NAMES[o]} MB" for o in ops]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_key = {(x["model"], x["peer"], x["case"], x["batch_size"], x["op"]): x["ratio"] for x in ratios(record, clock)}
    for r in record["results"]:
        size = f"{r['batch_size']} × qm9" if r["case"] == "qm9" else r["case"]
        cells = [r["model"], size, str(r["n_atoms"]), str(r["n_edges"]), r["implementation"]]
        if r["skipped"]:
            cells = [r["model"], "—", "—", "—", r["implementation"]] if not r["n_atoms"] else cells
            lines.append("| " + " | ".join(cells + [f"skipped: {r['skipped']}"] + [""] * (2 * len(ops))) + " |")
            continue
        cells.append(f"{r['parameters']:,}")
        for op in ops:
            text = _fmt(r[clock].get(op)) if op not in r["errors"] else f"failed: {r['errors'][op]}"
            ratio = by_key.get((r["model"], r["implementation"], r["case"], r["batch_size"], op))
            if ratio is not None:
                text += f" [{ratio:.2f}×]"
            cells.append(text)
        cells += [f"{r['memory_mb'][op]:.1f}" if op in r["memory_mb"] else "—" for op in ops]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(record: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _plot(record: dict, case_filter, xkey: str, xlabel: str, path: Path, title: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple, list] = {}
    for r in record["results"]:
        if r["skipped"] or not case_filter(r):
            continue
        for op, t in r["times"].items():
            series.setdefault((r["model"], r["implementation"], r["case"], op), []).append((r[xkey], t["median_ms"]))
    if not series:
        return False
    ops = record["settings"]["ops"]
    fig, axes = plt.subplots(1, len(ops), figsize=(4.2 * len(ops), 3.6), squeeze=False)
    for ax, op in zip(axes[0], ops):
        for (model, impl, case, o), pts in sorted(series.items()):
            if o != op:
                continue
            pts.sort()
            label = f"{model} {impl}" + ("" if case == "qm9" else f" ({case})")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if impl.startswith("eqbench") else "s--",
                    label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("time (ms, median)")
        ax.set_title(OP_NAMES[op])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    plt.rcParams["svg.hashsalt"] = "eqbench"
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    return True


def write_report(record: dict, directory: str | os.PathLike, command: str, notes: str = "") -> Path:
    """``index.md`` (tables, ratios, environment, command), ``bench.json`` and the plots."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(record, directory / "bench.json")
    env = record["environment"]
    plots = []
    if _plot(record, lambda r: r["case"] == "qm9", "n_atoms", "atoms per batch (QM9-size molecules)",
             directory / "time_vs_batch_atoms.svg", "time against atoms per batch"):
        plots.append("time_vs_batch_atoms.svg")
    if _plot(record, lambda r: r["case"] != "qm9", "n_atoms", "atoms per structure (water)",
             directory / "time_vs_structure_atoms.svg", "time against atoms per structure"):
        plots.append("time_vs_structure_atoms.svg")
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [
        "# eqbench bench", "",
        f"Command: `{command}`", "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, torch threads {env['torch_threads']}, device "
        f"{env['device']}{' (' + env['gpu'] + ')' if env.get('gpu') else ''}; {env['platform']}; "
        f"{env['date_utc']}. Load average at start {env.get('load_average_start')}, at end "
        f"{env.get('load_average_end')}.", "",
        f"Versions: {versions}.", "",
    ]
    if notes:
        lines += [notes, ""]
    lines += ["Times are the median (interquartile range) of the repetitions in ms; repetitions interleave the "
              "implementations. [r×] after a peer's time is peer time / eqbench time (> 1: eqbench is faster). "
              "Peers are handed eqbench's neighbour list; eqbench builds its own inside the forward pass. "
              "Memory is the peak growth during one operation (CPU: resident set; CUDA: max_memory_allocated).", "",
              "## Wall-clock time", "", table(record, "times"), ""]
    if any(r.get("cpu_times") for r in record["results"]):
        lines += ["## CPU time of the process", "",
                  "The same operations measured in CPU time (all threads of the process), which a loaded, shared "
                  "machine disturbs less than wall-clock time.", "", table(record, "cpu_times"), ""]
    if record.get("batch_assembly"):
        ba = record["batch_assembly"]
        lines += ["## Batch assembly", "", f"{ba['molecules_per_s']:,.0f} QM9-size molecules/s "
                  f"({ba['description']}).", ""]
    for p in plots:
        lines += [f"![{p}]({p})", ""]
    (directory / "index.md").write_text("\n".join(lines))
    return directory / "index.md"
