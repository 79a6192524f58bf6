"""LightningDataModule over any eqbench dataset (cache file, bundled name or readable file)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from torch.utils.data import DataLoader

from eqbench.data.dataset import AtomisticDataset
from eqbench.data.readers import read
from eqbench.data.splits import Split, make_split
from eqbench.errors import DataError


def _identity(batch):
    # The dataset's __getitems__ already returns a collated Batch.
    return batch


class AtomisticDataModule(pl.LightningDataModule):
    """Batches of molecules from one dataset with a named split protocol.

    Args:
        path: cache file, readable file, or bundled dataset name (``ferrocene``, ``cumulene``).
        batch_size: molecules per training batch (``eval_batch_size`` for validation/test).
        split: protocol name (``random``, ``ferrocene``, ``qm9-110k``, ...).
        train_size, val_size, test_size: sizes for the protocol (count or fraction; None = protocol
            default, or the rest).
        seed: selects the split (and is recorded with it).
        subset: keep only molecules whose per-molecule property takes one of the given values,
            e.g. ``{"n_carbon": [5, 9]}``.
        split_dir: where split files go; default: ``<cache>.splits/`` beside a writable cache,
            else ``$EQBENCH_HOME/splits/<fingerprint>/`` (``~/.cache/eqbench``).
        num_workers: DataLoader worker processes.
        units: units of the file's properties when the format stores none (extxyz), e.g.
            ``{"energy": "eV", "forces": "eV/Å"}``.
    """

    def __init__(self, path: str = "ferrocene", batch_size: int = 32, eval_batch_size: int | None = None,
                 split: str = "random", train_size: int | float | None = None, val_size: int | float | None = None,
                 test_size: int | float | None = None, seed: int = 0, subset: dict[str, list] | None = None,
                 split_dir: str | None = None, num_workers: int = 0, units: dict[str, str] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.path, self.batch_size = path, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.protocol, self.seed, self.subset = split, seed, subset
        self.sizes = {k: v for k, v in (("train", train_size), ("val", val_size), ("test", test_size))
                      if v is not None}
        self.split_dir, self.num_workers, self.units_given = split_dir, num_workers, units
        self.dataset: AtomisticDataset | None = None
        self.split: Split | None = None

    # ------------------------------------------------------------------ preparation
    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = read(self.path, units=self.units_given)
        if self.dataset.fingerprint is None:
            from eqbench.data.cache import fingerprint

            self.dataset.fingerprint = fingerprint(self.dataset)
        subset = {"subset": {k: sorted(v) for k, v in self.subset.items()}} if self.subset else None
        self.split = make_split(self._candidates(), self.protocol, self.seed, self._split_directory(),
                                self.dataset.fingerprint, name_options=subset, dataset=self.dataset,
                                **self.sizes)

    def _candidates(self) -> np.ndarray:
        idx = np.arange(len(self.dataset))
        for key, allowed in (self.subset or {}).items():
            self.dataset.require([key])
            prop = self.dataset.properties[key]
            if prop.per_atom:
                raise DataError(f"{self.path}: subset key {key!r} is a per-atom property; use a per-molecule one")
            idx = idx[np.isin(prop.values[idx], allowed)]
        if len(idx) == 0:
            raise DataError(f"{self.path}: subset {self.subset} selects no molecules")
        return idx

    def _split_directory(self) -> Path:
        if self.split_dir:
            return Path(self.split_dir)
        source = Path(self.dataset.source)
        # Bundled data lives inside the package, which may be read-only: its splits go to the user cache.
        inside_package = Path(__file__).parent in source.parents
        if source.is_file() and os.access(source.parent, os.W_OK) and not inside_package:
            return source.parent / f"{source.stem}.splits"
        home = Path(os.environ.get("EQBENCH_HOME", Path.home() / ".cache" / "eqbench"))
        return home / "splits" / self.dataset.fingerprint[:16]

    # ------------------------------------------------------------------ properties the task needs
    @property
    def units(self) -> dict[str, str]:
        return self.dataset.units

    @property
    def train_dataset(self) -> AtomisticDataset:
        return self.dataset.subset(self.split.train)

    # ------------------------------------------------------------------ loaders
    def _loader(self, indices: np.ndarray, batch_size: int, shuffle: bool) -> DataLoader:
        import torch.distributed as dist
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
        from torch.utils.data import Subset

        subset = Subset(self.dataset, indices.tolist())
        sampler = None
        if not shuffle and dist.is_available() and dist.is_initialized():
            # Lightning's default DistributedSampler pads evaluation sets with repeated molecules, so
            # multi-GPU metrics would differ from a single-process evaluation; this one splits them exactly.
            sampler = UnrepeatedDistributedSampler(subset, num_replicas=dist.get_world_size(),
                                                   rank=dist.get_rank(), shuffle=False)
        return DataLoader(subset, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
                          sampler=sampler, collate_fn=_identity, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split.train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split.val, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split.test, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device)
