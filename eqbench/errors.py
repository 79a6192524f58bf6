"""Errors a user can cause. Each message names the file, index or key and says what to do."""


class EqbenchError(Exception):
    """Base class of every error eqbench raises for bad input or bad configuration."""


class DataError(EqbenchError):
    """A data file is missing, unreadable, corrupt or holds invalid molecules."""


class MissingPropertyError(DataError, KeyError):
    """A required property (target) is not in the dataset."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class SplitError(EqbenchError):
    """A split cannot be made or does not fit the dataset."""


class ModelError(EqbenchError):
    """Unknown model name or an impossible model configuration."""


class ConfigError(EqbenchError):
    """A run, sweep or report configuration is invalid."""


class GenerationError(EqbenchError):
    """Reference-data generation failed."""


class StorageError(EqbenchError):
    """A file could not be written (disk full, file-size limit, read-only file system)."""
