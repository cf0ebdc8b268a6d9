"""The one place mmpt's exception classes live.

Every error names the bad file, key or value, what was expected, and the fix. The CLI prints them
without a traceback and exits non-zero (2 for configuration/usage errors, 1 for the rest).
"""

from __future__ import annotations


class MmptError(Exception):
    """Root of every error mmpt raises on purpose.

    Args:
        message: what went wrong, quoting the offending file/key/value and what was expected.
        hint: how to fix it (printed on its own line by the CLI).
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\nHint: {self.hint}" if self.hint else self.message


class ConfigError(MmptError, ValueError):
    """A bad configuration value, recipe key or registry name."""

    exit_code = 2


class CheckpointError(MmptError):
    """A checkpoint that cannot be found, downloaded, verified, read or loaded."""


class DownloadError(CheckpointError):
    """A download failed, was truncated, or its hash did not match."""


class IntegrityError(DownloadError):
    """A downloaded file whose size or sha256 is not the expected one."""


class BaseMismatchError(MmptError):
    """An artifact was trained on a different backbone than the one it is loaded onto."""


class ArtifactError(MmptError):
    """An artifact file that is corrupted, truncated, foreign or of an unknown version."""


class DatasetLayoutError(MmptError):
    """A dataset directory that does not follow the official MultiMAE NYUv2 layout."""


class TrainingError(MmptError):
    """A training run that cannot continue (non-finite loss, unusable resume state, ...)."""
