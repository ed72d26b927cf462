"""Errors the user can act on.

Every error raised for bad input derives from `LionError`; the CLI prints its message alone (no
traceback unless --debug) and exits non-zero. Messages name the file, row or field at fault.
"""


class LionError(Exception):
    """An error whose message is meant for the user as it stands."""


class ConfigError(LionError):
    """The run config is missing, unreadable or invalid."""


class SeedError(LionError):
    """The seed data could not be loaded; nothing was written."""


class StoreError(LionError):
    """A stored artifact is missing, or a write would overwrite one."""


class IntegrityError(StoreError):
    """A stored file does not match the hash it was recorded with."""


class ShardIncomplete(LionError):
    """Too many requests of a shard failed after the gateway's retries; worth retrying later."""


class EvaluationIncomplete(LionError):
    """Too few evaluation items were judged to trust the scores."""
