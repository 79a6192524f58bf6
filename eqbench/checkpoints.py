"""Checkpoints: the one error boundary for reading them, and writing them atomically.

Every command that reads a checkpoint (``eqbench fit|validate|test|predict --ckpt_path``,
``eqbench evaluate``, :func:`eqbench.tracking.load_model`) goes through :func:`read_checkpoint`
and :func:`check_fits`: a file that is missing, not a checkpoint, damaged, or made for another
model is a :class:`~eqbench.errors.ConfigError` naming the file and saying what a checkpoint is,
never a traceback from ``torch.load``. Checkpoints are loaded with ``weights_only=True``.

:class:`AtomicCheckpointIO` writes each checkpoint to a temporary file beside it and renames it
when complete, so a full disk or a kill during a save leaves the previous ``last.ckpt`` or
``best.ckpt`` intact (Lightning's own writer overwrites the file in place).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

from eqbench.errors import ConfigError, StorageError

WHAT_A_CHECKPOINT_IS = ("a checkpoint is the .ckpt file a run writes (RUN/checkpoints/best.ckpt or last.ckpt); "
                        "pass one of those")
# What torch.load raises for files that are not (whole) checkpoints: random bytes, a truncated zip,
# another pickle, a text file, objects that weights_only refuses.
_UNREADABLE = (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError,
               ImportError, IndexError, UnicodeDecodeError, zipfile.BadZipFile, OSError)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The content of a Lightning checkpoint (``state_dict`` and training state), loaded on the CPU."""
    import torch

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"checkpoint {path} not found; {WHAT_A_CHECKPOINT_IS}")
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} is not a file; {WHAT_A_CHECKPOINT_IS}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as err:
        detail = " ".join(str(err).split())[:200]
        raise ConfigError(f"{path} is not a readable checkpoint ({type(err).__name__}: {detail}); "
                          f"{WHAT_A_CHECKPOINT_IS}") from err
    if not isinstance(content, dict) or not isinstance(content.get("state_dict"), dict):
        raise ConfigError(f"{path} is not a Lightning checkpoint (no state_dict); {WHAT_A_CHECKPOINT_IS}")
    return content


def check_fits(checkpoint: dict, module, path: str | os.PathLike) -> None:
    """The checkpoint's weights have the names and shapes of ``module``'s (else: made for another model)."""
    import torch

    saved = checkpoint["state_dict"]
    expected = module.state_dict()
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [k for k in expected if k in saved and isinstance(saved[k], torch.Tensor)
              and tuple(saved[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
            if keys:
                problems.append(f"{len(keys)} weight(s) {label}, e.g. {keys[0]}")
        raise ConfigError(f"{path} was made for another model ({'; '.join(problems)}); use the config the run was "
                          f"trained with (RUN/config.yaml) with its checkpoint")


def load_weights(path: str | os.PathLike, module) -> dict:
    """Read ``path`` and load its weights into ``module``; returns the checkpoint."""
    checkpoint = read_checkpoint(path)
    check_fits(checkpoint, module, path)
    module.load_state_dict(checkpoint["state_dict"])
    return checkpoint


def atomic_checkpoint_io():
    """A Lightning CheckpointIO that writes through a temporary file and a rename."""
    from lightning.fabric.utilities.cloud_io import get_filesystem
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            import torch

            fs = get_filesystem(path)
            if type(fs).__name__ != "LocalFileSystem":  # remote storage: Lightning's own writer
                return super().save_checkpoint(checkpoint, path, storage_options)
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            try:
                with open(tmp, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            except OSError as err:
                tmp.unlink(missing_ok=True)
                previous = " (the previous one is kept)" if target.exists() else ""
                raise StorageError(f"could not write checkpoint {target}{previous}: {err.strerror or err}; free disk "
                                  f"space or raise the file-size limit, then resume with --ckpt_path "
                                  f"{target.parent / 'last.ckpt'}") from err
            return None

    return AtomicCheckpointIO()
