"""Timing and memory of eqbench's models against their peers, on the same batch in the same process.

Operations, each on a fixed, seeded batch:

- ``forward``: the energy, without gradients (inference);
- ``energy_forces``: energy and forces F = −∂E/∂r (evaluation mode, no graph kept);
- ``train_step``: energy and forces with ``create_graph``, an energy + force MSE loss, its backward
  pass and an Adam step.

Repetitions are interleaved (each repetition runs every contender once), so a machine whose load
changes during the run slows all contenders alike; the table gives the median and the interquartile
range. Peak memory is measured after all timings, one operation at a time: on CPU the growth of the
process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``, with glibc's
``mmap`` threshold fixed so that freed tensors leave the resident set), on CUDA
``torch.cuda.max_memory_allocated`` above the memory held before the operation.

With ``isolate`` (the CLI's default) every model is timed in a fresh, spawned process, so that its numbers do
not depend on the models timed before it in the same command (the allocator state a large model leaves behind
changed later models' and peers' CPU times by up to 10 %); eqbench and its peers still share that process.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import torch

from eqbench.bench.contenders import (
    PEER_PACKAGES,
    Contender,
    EqbenchContender,
    Skipped,
    build_peer,
    package_version,
)
from eqbench.bench.registry import BENCH_MODELS, BenchModel, known_to_eqbench
from eqbench.bench.structures import qm9_like_batch, water_batch
from eqbench.errors import ConfigError

OPS = ("forward", "energy_forces", "train_step")


@dataclass
class Timing:
    median_ms: float
    q25_ms: float
    q75_ms: float
    min_ms: float
    n: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timing:
        ms = sorted(1e3 * s for s in seconds)
        q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
        return cls(statistics.median(ms), q[0], q[2], ms[0], len(ms))


@dataclass
class Result:
    model: str
    implementation: str  # "eqbench" or a peer's label
    case: str  # "qm9" (batch of QM9-size molecules), "cluster" or "periodic" (water)
    batch_size: int  # structures per batch
    n_atoms: int
    n_edges: int
    parameters: int | None = None
    times: dict[str, Timing] = field(default_factory=dict)  # wall-clock time
    cpu_times: dict[str, Timing] = field(default_factory=dict)  # CPU time of the process (all its threads)
    memory_mb: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None  # the reason, when this implementation did not run
    errors: dict[str, str] = field(default_factory=dict)  # operation -> why it failed


# ------------------------------------------------------------------------------------------ memory
class _Memory:
    """Peak memory of one operation in MB (see module docstring)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.libc = None
        if not self.cuda and sys.platform.startswith("linux"):
            try:
                self.libc = ctypes.CDLL("libc.so.6")
                self.libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD fixed: large tensors go back to the system
            except OSError:
                self.libc = None

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1)) * 1024

    def measure(self, fn: Callable[[], object]) -> float | None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        if self.libc is None:
            return None
        self.libc.malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return None
        base = self._status("VmRSS")
        fn()
        return (self._status("VmHWM") - base) / 2**20


# ------------------------------------------------------------------------------------------ operations
def _operation(contender: Contender, op: str, inputs, targets, optimizer) -> Callable[[], object]:
    module = contender.module
    if op == "forward":
        def run():
            module.eval()
            with torch.no_grad():
                return contender.energy(inputs)
    elif op == "energy_forces":
        def run():
            module.eval()
            energy, forces = contender.energy_forces(inputs)
            return energy.detach(), forces.detach()
    elif op == "train_step":
        e_ref, f_ref = targets

        def run():
            module.train()
            energy, forces = contender.energy_forces(inputs)
            loss = (energy - e_ref.to(energy.dtype)).pow(2).mean() + (forces - f_ref.to(forces.dtype)).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()
    else:
        raise ConfigError(f"unknown operation {op!r}; choose from {OPS}")
    return run


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_all(contenders: list[Contender], results: list[Result], ops: Sequence[str], batch, device: str,
              repeats: int, warmup: int) -> list[tuple]:
    """Time every (contender, op) with interleaved repetitions; fill ``results`` in place. Returns the
    (result, op, function) of every operation that ran, for the memory pass."""
    runs = {}
    for c, r in zip(contenders, results):
        inputs = c.prepare(batch)
        targets = (batch.targets["energy"].to(device), batch.targets["forces"].to(device))
        optimizer = torch.optim.Adam(c.module.parameters(), lr=1e-5)
        for op in ops:
            if op == "train_step" and getattr(c, "compiled", False):
                r.errors[op] = "torch.compile does not support the double backward of a force loss"
                continue
            runs[(id(c), op)] = (r, op, _operation(c, op, inputs, targets, optimizer))
    seconds: dict[tuple, list[float]] = {key: [] for key in runs}
    cpu_seconds: dict[tuple, list[float]] = {key: [] for key in runs}
    for rep in range(warmup + repeats):
        for key, (r, op, fn) in list(runs.items()):
            try:
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                _sync(device)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
            except (RuntimeError, TypeError, ValueError, IndexError) as err:  # a peer that fails is reported
                r.errors[op] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                del runs[key]
                continue
            if rep >= warmup:
                seconds[key].append(dt)
                cpu_seconds[key].append(dc)
    for key, (r, op, _fn) in runs.items():
        r.times[op] = Timing.of(seconds[key])
        r.cpu_times[op] = Timing.of(cpu_seconds[key])
    return list(runs.values())


def _measure_memory(operations: list[tuple], device: str) -> None:
    """Peak memory of every operation, after all timings: on CPU the measurement fixes glibc's mmap threshold
    for the rest of the process, which makes every later large allocation a fresh mmap (steps 2–3× slower)."""
    meter = _Memory(device)
    for r, op, fn in operations:
        value = meter.measure(fn)
        if value is not None:
            r.memory_mb[op] = round(value, 2)


# ------------------------------------------------------------------------------------------ the benchmark
def contenders_for(name: str, kwargs: dict, device: str, dtype: torch.dtype, peers: bool, compile: bool,
                   only_peers: Sequence[str] | None = None) -> list[Contender | Skipped]:
    entry = BENCH_MODELS[name]
    out: list[Contender | Skipped] = []
    reason = known_to_eqbench(name)
    if reason:
        return [Skipped("eqbench", reason)]
    c = EqbenchContender(entry.model_name, {**entry.kwargs, **kwargs}, device, dtype)
    if compile:
        c.compile()
        c.compiled = True
        c.label = "eqbench (compiled)"
    out.append(c)
    if peers:
        for peer in entry.peers:
            if only_peers is None or peer in only_peers:
                out.append(build_peer(peer, entry.model_name, {**entry.kwargs, **kwargs}, device, dtype))
    return out


def run_bench(models: Sequence[str] = ("schnet", "painn"), batch_sizes: Sequence[int] = (50,), repeats: int = 10,
              warmup: int = 2, device: str = "cpu", dtype: torch.dtype = torch.float32, compile: bool = False,
              peers: bool = True, only_peers: Sequence[str] | None = None, ops: Sequence[str] = OPS,
              seed: int = 0, memory: bool = True, scaling: Sequence[int] = (), model_kwargs: dict | None = None,
              scaling_models: Sequence[str] | None = None, isolate: bool = False,
              log: Callable[[str], None] = print) -> dict:
    """Run the benchmark; returns the JSON-ready record (results, hardware, versions, settings).

    ``scaling`` structures are timed for ``scaling_models`` (default: every model); periodic boxes only for
    models that take periodic cells. ``isolate``: each model in a fresh process (module docstring), which then
    measures its own peak memory after its timings and logs to stderr.
    """
    for name in [*models, *(scaling_models or ())]:
        if name not in BENCH_MODELS:
            raise ConfigError(f"eqbench bench: unknown model {name!r}; choose from {sorted(BENCH_MODELS)}")
    scaling_models = list(models) if scaling_models is None else list(scaling_models)
    for op in ops:
        if op not in OPS:
            raise ConfigError(f"eqbench bench: unknown operation {op!r}; choose from {OPS}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("eqbench bench --device cuda: no CUDA device is visible; run on a GPU or use --device cpu")
    record = {"settings": dict(models=list(models), batch_sizes=list(batch_sizes), repeats=repeats, warmup=warmup,
                               device=device, dtype=str(dtype).replace("torch.", ""), compile=compile, peers=peers,
                               ops=list(ops), seed=seed, scaling=list(scaling), scaling_models=scaling_models,
                               isolate=isolate),
              "environment": environment(device)}
    settings = dict(batch_sizes=batch_sizes, repeats=repeats, warmup=warmup, device=device, dtype=dtype,
                    compile=compile, peers=peers, only_peers=only_peers, ops=ops, seed=seed, memory=memory,
                    scaling=scaling, model_kwargs=model_kwargs or {}, scaling_models=scaling_models)
    if isolate:
        results = []
        for name in models:  # a new process per model: one pool of one worker each
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                results += pool.submit(_time_model_in_child, BENCH_MODELS[name], torch.get_num_threads(),
                                       settings).result()
    else:
        results = _time_models(models, **settings, log=log)
    record["results"] = [asdict(r) for r in results]
    record["environment"]["load_average_end"] = _loadavg()
    return record


def _time_model_in_child(entry: BenchModel, threads: int, settings: dict) -> list[Result]:
    """:func:`_time_models` for one entry in a spawned process, with the parent's thread count and the parent's
    entry (also one registered at run time); progress on stderr."""
    torch.set_num_threads(threads)
    BENCH_MODELS[entry.name] = entry
    return _time_models([entry.name], **settings, log=lambda m: print(m, file=sys.stderr, flush=True))


def _time_models(models, batch_sizes, repeats, warmup, device, dtype, compile, peers, only_peers, ops, seed,
                 memory, scaling, model_kwargs, scaling_models, log) -> list[Result]:
    """Every case of ``models`` in this process; peak memory after all their timings."""
    results: list[Result] = []
    operations: list[tuple] = []  # everything timed, for the memory pass at the end
    for name in models:
        contenders = contenders_for(name, model_kwargs, device, dtype, peers, compile, only_peers)
        if all(isinstance(c, Skipped) for c in contenders):
            results.extend(Result(name, c.label, "qm9", 0, 0, 0, skipped=c.reason) for c in contenders)
            log(f"{name}: skipped ({contenders[0].reason})")
            continue
        for bs in batch_sizes:
            batch = qm9_like_batch(bs, seed=seed, dtype=dtype)
            results.extend(_run_case(name, "qm9", batch, contenders, ops, device, repeats, warmup, operations, log))
        periodic_cases = (False, True) if _supports_periodic(contenders) else (False,)
        for n in scaling if name in scaling_models else ():
            for periodic in periodic_cases:
                batch = water_batch(n, periodic, seed=seed, dtype=dtype)
                live = [c for c in contenders if isinstance(c, Skipped) or c.label.startswith("eqbench")]
                results.extend(_run_case(name, "periodic" if periodic else "cluster", batch, live,
                                         [o for o in ops if o != "train_step"] or ops, device,
                                         max(3, repeats // 3), 1, operations, log))
    if memory:
        _measure_memory(operations, device)
    return results


def _supports_periodic(contenders) -> bool:
    own = [c for c in contenders if isinstance(c, EqbenchContender)]
    return bool(own) and all(getattr(c.module.representation, "supports_periodic", False) for c in own)


def _run_case(name, case, batch, contenders, ops, device, repeats, warmup, operations, log) -> list[Result]:
    from eqbench.geometry import radius_graph

    cutoff = BENCH_MODELS[name].kwargs.get("cutoff", 5.0)
    graph = radius_graph(batch.pos, batch.batch, batch.n_atoms, cutoff, batch.cell, batch.pbc)
    n_atoms, n_edges = int(batch.pos.shape[0]), int(graph.center.shape[0])
    results, live, live_results = [], [], []
    for c in contenders:
        r = Result(name, c.label, case, batch.n_molecules, n_atoms, n_edges)
        if isinstance(c, Skipped):
            r.skipped = c.reason
        else:
            r.parameters = c.n_parameters
            live.append(c)
            live_results.append(r)
        results.append(r)
    log(f"{name} {case}: {batch.n_molecules} structures, {n_atoms} atoms, {n_edges} edges; "
        f"{', '.join(c.label for c in live)}")
    operations.extend(_time_all(live, live_results, ops, batch, device, repeats, warmup))
    return results


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment(device: str) -> dict:
    """Hardware and package versions, for the JSON record."""
    import eqbench

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
           "load_average_start": _loadavg(),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "versions": {"eqbench": eqbench.__version__, "torch": torch.__version__,
                        "numpy": package_version("numpy"), "vesin": package_version("vesin"),
                        **{pkg: package_version(pkg) for pkg in PEER_PACKAGES.values()}}}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env
