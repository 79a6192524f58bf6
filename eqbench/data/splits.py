"""Train/validation/test splits as index files, named by protocol and seed, written once.

A protocol is a named rule that turns (candidate molecule indices, seed) into three
disjoint index arrays. Paper protocols are registered under their names (e.g.
``qm9-110k``, ``md17-1k``); ``random`` takes explicit sizes. The file holds the indices
and the fingerprint of the dataset it was made for; reusing it for another dataset is
an error rather than a silent mismatch.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eqbench.errors import SplitError


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    path: Path | None = None

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)


Size = int | float | None
ProtocolFn = Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]
PROTOCOLS: dict[str, ProtocolFn] = {}


def register_protocol(name: str):
    def deco(fn: ProtocolFn) -> ProtocolFn:
        PROTOCOLS[name] = fn
        return fn

    return deco


def resolve_sizes(n: int, train: Size, val: Size, test: Size) -> tuple[int, int, int]:
    """Sizes as counts: an int is a count, a float in (0, 1) a fraction of n, None the rest."""

    def count(x: Size) -> int | None:
        if x is None:
            return None
        if isinstance(x, float) and 0 < x < 1:
            return int(round(x * n))
        if x < 0 or (isinstance(x, float) and not float(x).is_integer()):
            raise SplitError(f"split size {x!r} must be a count ≥ 0 or a fraction in (0, 1)")
        return int(x)

    sizes = [count(train), count(val), count(test)]
    if sizes.count(None) > 1:
        raise SplitError("at most one of train/val/test size may be left open (the rest)")
    fixed = sum(s for s in sizes if s is not None)
    if fixed > n:
        raise SplitError(f"split sizes train={train}, val={val}, test={test} need {fixed} molecules but the "
                         f"dataset has {n}; choose smaller sizes")
    return tuple(n - fixed if s is None else s for s in sizes)  # type: ignore[return-value]


@register_protocol("random")
def random_split(candidates: np.ndarray, seed: int, train: Size = 0.8, val: Size = 0.1, test: Size = None):
    n_train, n_val, n_test = resolve_sizes(len(candidates), train, val, test)
    perm = np.random.default_rng(seed).permutation(candidates)
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:n_train + n_val + n_test]


@register_protocol("all")
def all_for_evaluation(candidates: np.ndarray, seed: int):
    """Every molecule in the test (and predict) set, in order: for evaluating or predicting new data."""
    return candidates[:0], candidates[:0], np.asarray(candidates)


def split_filename(protocol: str, seed: int, options: dict) -> str:
    """``<protocol>[-<hash of options>]-seed<seed>.npz``; options are the sizes and subset."""
    name = protocol
    if options:
        digest = hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]
        name += f"-{digest}"
    return f"{name}-seed{seed}.npz"


def make_split(candidates: np.ndarray, protocol: str, seed: int, directory: str | os.PathLike | None,
               dataset_fingerprint: str | None, name_options: dict | None = None, dataset=None, **options) -> Split:
    """Load the split file for (protocol, options, seed) from ``directory``, or make and write it.

    ``options`` go to the protocol; ``name_options`` (e.g. a subset selection) only make the file
    name distinct. A protocol whose signature has a ``dataset`` parameter also receives the dataset
    being split (rMD17's official splits and QM7-X's molecule groups come from it).
    """
    if protocol not in PROTOCOLS:
        raise SplitError(f"unknown split protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")
    name = split_filename(protocol, seed, {**options, **(name_options or {})})
    path = Path(directory) / name if directory is not None else None
    if path is not None and path.is_file():
        return load_split(path, dataset_fingerprint)
    fn = PROTOCOLS[protocol]
    extra = {"dataset": dataset} if dataset is not None and "dataset" in inspect.signature(fn).parameters else {}
    train, val, test = (np.asarray(a, dtype=np.int64) for a in fn(candidates, seed, **options, **extra))
    split = Split(train, val, test, path)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npz")
        np.savez(tmp, train=train, val=val, test=test, protocol=protocol, seed=seed,
                 options=json.dumps(options, sort_keys=True, default=str), fingerprint=dataset_fingerprint or "")
        os.replace(tmp, path)
    return split


def load_split(path: Path, dataset_fingerprint: str | None) -> Split:
    try:
        with np.load(path) as f:
            train, val, test = f["train"], f["val"], f["test"]
            recorded = str(f["fingerprint"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:  # truncated: EOF/BadZipFile
        raise SplitError(f"split file {path} is unreadable ({err}); delete it to make it again") from err
    if dataset_fingerprint and recorded and recorded != dataset_fingerprint:
        raise SplitError(f"split file {path} was made for another dataset (fingerprint {recorded[:12]}…, this "
                         f"one is {dataset_fingerprint[:12]}…); delete it or point split_dir elsewhere")
    return Split(train, val, test, path)
