"""``eqbench bench``: speed and memory of eqbench's models against their peers, and scaling with size."""

from eqbench.bench.registry import BENCH_MODELS, BenchModel, register
from eqbench.bench.runner import OPS, run_bench

__all__ = ["BENCH_MODELS", "BenchModel", "register", "OPS", "run_bench"]
