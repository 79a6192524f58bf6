"""Chunked, resumable, multi-process execution of a generation plan.

A generator describes its work as a :class:`Plan`: a JSON ``spec`` that fully determines the
structures, a module-level ``compute(spec, parts_dir, start, stop, state)`` returning a
:class:`~eqbench.data.generate.chunks.ChunkResult`, and chunks ``(start, stop, previous)``.
Independent chunks (``previous`` None) run in any order on any worker; a chunk with a
``previous`` continues that chunk's end state (an MD trajectory), so chains run in order.

Every random number a chunk uses comes from its own seed (derived from the run seed and the
structure or trajectory index), and every label is a fresh tblite calculation, so the output
does not depend on the number of workers, the chunk order or interruptions.

Work goes to ``<out>.parts/``: ``plan.json`` (spec and command lines), any shared reference
data (``reference-*.npz``), and one file per finished chunk. Rerunning the same command after
an interruption skips finished chunks; the final file is identical (same fingerprint) to an
uninterrupted run's. The directory is removed once the output file is written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from eqbench.data.generate.chunks import ChunkResult, chunk_path, load_chunk, load_reference, reference_path, save_chunk
from eqbench.data.generate.engine import tblite_context
from eqbench.errors import GenerationError

Compute = Callable[[dict, Path, int, int, "dict | None"], ChunkResult]


@dataclass(frozen=True)
class Plan:
    kind: str
    spec: dict  # JSON-able; everything the structures depend on (compared when resuming)
    compute: Compute
    chunks: tuple[tuple[int, int, int | None], ...]
    units: dict[str, str]
    per_atom: tuple[str, ...] = ("forces",)
    metadata: dict = field(default_factory=dict)  # written to the output file beside the spec

    @property
    def n(self) -> int:
        return self.chunks[-1][1] if self.chunks else 0


@dataclass
class GenerationResult:
    path: Path
    n_requested: int
    n_structures: int
    retries: list[dict]
    failures: list[dict]
    seconds: float
    fingerprint: str
    resumed_chunks: int

    def summary(self) -> str:
        text = (f"wrote {self.n_structures} structures to {self.path} in {self.seconds:.1f} s "
                f"(fingerprint {self.fingerprint[:12]})")
        if self.resumed_chunks:
            text += f"; {self.resumed_chunks} chunks were reused from an earlier, interrupted run"
        if self.retries:
            text += f"; {len(self.retries)} SCF retries converged (listed in metadata 'scf_retries')"
        if self.failures:
            shown = ", ".join(str(f["index"]) for f in self.failures[:20])
            text += (f"\nWARNING: {len(self.failures)} of {self.n_requested} structures failed the SCF with every "
                     f"retry and are NOT in the file (indices {shown}{', ...' if len(self.failures) > 20 else ''}); "
                     f"see metadata 'scf_failures'")
        return text


def independent_chunks(n: int, chunk_size: int) -> tuple[tuple[int, int, None], ...]:
    if n < 1 or chunk_size < 1:
        raise GenerationError(f"need n ≥ 1 and chunk_size ≥ 1 (got n={n}, chunk_size={chunk_size})")
    return tuple((a, min(a + chunk_size, n), None) for a in range(0, n, chunk_size))


def parts_dir_for(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _normalise(spec: dict) -> dict:
    return json.loads(json.dumps(spec, sort_keys=True, default=str))


def open_parts(out: str | Path, spec: dict, command: str) -> Path:
    """Create ``<out>.parts/`` for ``spec``, or check that an existing one was made for the same spec."""
    parts = parts_dir_for(out)
    plan_file = parts / "plan.json"
    spec = _normalise(spec)
    if plan_file.is_file():
        recorded = json.loads(plan_file.read_text())
        if recorded["spec"] != spec:
            keys = sorted(k for k in set(spec) | set(recorded["spec"]) if spec.get(k) != recorded["spec"].get(k))
            raise GenerationError(f"{parts} holds an interrupted run with different settings (differs in {keys}); "
                                  f"rerun with the same options to resume it, or delete {parts} to start over")
        if any(parts.glob("chunk-*.npz")):
            recorded.setdefault("resume_commands", []).append(command)
            _write_json(plan_file, recorded)
        return parts
    parts.mkdir(parents=True, exist_ok=True)
    _write_json(plan_file, {"spec": spec, "command": command, "resume_commands": []})
    return parts


def python_call(function: str, out, options: dict) -> str:
    """What to record as "the command" when a generator is called from Python rather than the CLI."""
    args = ", ".join(f"{k}={v!r}" for k, v in options.items())
    return f"python: eqbench.data.generate.{function}(out={str(out)!r}, {args})"


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    tmp.replace(path)


def load_or_build_reference(parts: Path, name: str, build: Callable[[], dict[str, np.ndarray]]) -> dict:
    """Arrays shared by all chunks (relaxed geometry, normal modes), built once per run and kept
    in the parts directory so that a resumed run uses exactly the same ones."""
    path = reference_path(parts, name)
    if not path.is_file():
        with tblite_context():
            arrays = build()
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.replace(path)
    return load_reference(parts, name)


def _run_chunk(compute: Compute, spec: dict, parts: Path, chunk: int, start: int, stop: int,
               previous: int | None, per_atom: tuple[str, ...]) -> tuple[int, int]:
    state = load_chunk(chunk_path(parts, previous), per_atom).state if previous is not None else None
    with tblite_context():
        result = compute(spec, parts, start, stop, state)
    save_chunk(parts, chunk, result, per_atom)
    return chunk, stop - start


def _init_worker() -> None:
    """Worker initializer: one OpenMP thread per worker (see engine.single_threaded_openmp), and
    fd 1 to /dev/null for good, as tblite's Fortran code writes there directly."""
    os.environ["OMP_NUM_THREADS"] = "1"
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def run_plan(plan: Plan, parts: Path, out: str | Path, workers: int = 1, progress: bool = True,
             keep_parts: bool = False, started: float | None = None):
    """Compute the missing chunks of ``plan`` and write the output cache; returns a GenerationResult.

    ``started``: ``time.perf_counter()`` when the generator began (so the time includes references).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter() if started is None else started
    done = {k for k in range(len(plan.chunks)) if chunk_path(parts, k).is_file()}
    resumed = len(done)
    args = (plan.compute, plan.spec, parts)
    bar = tqdm(total=plan.n, initial=sum(plan.chunks[k][1] - plan.chunks[k][0] for k in done), unit="structure",
               desc=f"{plan.kind} [{workers} worker{'s' if workers > 1 else ''}]", disable=not progress,
               file=sys.stderr, smoothing=0.1)
    with bar:
        if workers <= 1:
            for k, (start, stop, previous) in enumerate(plan.chunks):
                if k in done:
                    continue
                try:
                    _run_chunk(*args, k, start, stop, previous, plan.per_atom)
                except GenerationError as err:
                    raise _with_resume_hint(plan, k, parts, err) from err
                bar.update(stop - start)
        else:
            _run_pool(plan, parts, done, workers, bar)
    result = assemble(plan, parts, out, time.perf_counter() - t0, resumed)
    if not keep_parts:
        shutil.rmtree(parts)
    return result


def _with_resume_hint(plan: Plan, k: int, parts: Path, err: GenerationError) -> GenerationError:
    start, stop, _ = plan.chunks[k]
    return GenerationError(f"chunk {k} (structures {start}–{stop - 1}) failed: {err}. Finished chunks are kept in "
                           f"{parts}; fix the cause and rerun the same command to resume")


def _run_pool(plan: Plan, parts: Path, done: set[int], workers: int, bar) -> None:
    # Spawned (not forked) workers: the parent may hold torch/OpenMP threads, which fork does not copy safely.
    successors = {prev: k for k, (_, _, prev) in enumerate(plan.chunks) if prev is not None}
    ready = [k for k, (_, _, prev) in enumerate(plan.chunks) if k not in done and (prev is None or prev in done)]
    running: dict[Future, int] = {}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        try:
            while ready or running:
                while ready and len(running) < 2 * workers:  # a small queue keeps workers busy
                    k = ready.pop(0)
                    start, stop, previous = plan.chunks[k]
                    running[pool.submit(_run_chunk, plan.compute, plan.spec, parts, k, start, stop, previous,
                                        plan.per_atom)] = k
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    k = running.pop(future)
                    start, stop, _ = plan.chunks[k]
                    try:
                        future.result()
                    except GenerationError as err:
                        raise _with_resume_hint(plan, k, parts, err) from err
                    bar.update(stop - start)
                    if k in successors:
                        ready.append(successors[k])
        except BaseException:
            for future in running:
                future.cancel()
            raise


def assemble(plan: Plan, parts: Path, out: str | Path, seconds: float, resumed: int) -> GenerationResult:
    """Concatenate the chunk files in order into the output cache."""
    from eqbench.data.cache import write_cache
    from eqbench.data.dataset import AtomisticDataset

    numbers, positions, properties, events = [], [], {}, []
    for k in range(len(plan.chunks)):
        chunk = load_chunk(chunk_path(parts, k), plan.per_atom)
        numbers += chunk.numbers
        positions += chunk.positions
        for name, values in chunk.properties.items():
            properties.setdefault(name, []).extend(values)
        events += chunk.events
    if not numbers:
        raise GenerationError(f"every structure of {plan.kind} failed; nothing to write to {out}. Check the "
                              f"events in {parts} and the calculator settings")
    recorded = json.loads((parts / "plan.json").read_text())
    retries = [e for e in events if e["event"] == "scf_retry"]
    failures = [e for e in events if e["event"] == "scf_failure"]
    metadata = {
        **plan.metadata,
        "kind": plan.kind,
        "spec": recorded["spec"],
        "command": recorded["command"],
        "resume_commands": recorded.get("resume_commands", []),
        "n_requested": plan.n,
        "n_structures": len(numbers),
        "scf_retries": retries,
        "scf_failures": failures,
    }
    dataset = AtomisticDataset.from_molecules(numbers, positions, properties, plan.units, per_atom=plan.per_atom,
                                              metadata=metadata, source=str(out))
    fp = write_cache(dataset, out)
    return GenerationResult(Path(out), plan.n, len(numbers), retries, failures, seconds, fp, resumed)
