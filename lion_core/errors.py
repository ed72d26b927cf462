"""Errors the user can act on.

Every error raised for bad input derives from `LionError`; the CLI prints its message alone (no
traceback unless --debug) and exits non-zero. Messages name the file, row or field at fault.
"""


class LionError(Exception):
    """An error whose message is meant for the user as it stands."""

    exit_code = 1
    """What `lion` exits with when this error ends it."""


class ConfigError(LionError):
    """The run config is missing, unreadable or invalid."""


class SeedError(LionError):
    """The seed data could not be loaded; nothing was written."""


class StoreError(LionError):
    """A stored artifact is missing, or a write would overwrite one."""


class IntegrityError(StoreError):
    """A stored file does not match the hash it was recorded with."""


class ShardIncomplete(LionError):
    """Too many requests of a shard failed after the gateway's retries; worth retrying later. Raised by
    versions before the stage-wide threshold (StageIncomplete); kept so their recorded failures load."""


class EvaluationIncomplete(LionError):
    """Too few evaluation items were judged to trust the scores."""


class StageIncomplete(LionError):
    """More of a stage's requests failed after every retry than `max_failed_fraction` allows; the run
    stops, and a resume sends only the failed ones again."""


class BudgetExhausted(LionError):
    """A spending cap (`budget`) was reached: the stage stopped sending, every paid answer is stored.
    Raising the cap and resuming goes on."""

    exit_code = 3


class EndpointDown(LionError):
    """An endpoint stayed down or overloaded longer than `retry.max_outage_s`: the run stopped sending,
    nothing was recorded as failed, and a resume goes on once it is back."""

    exit_code = 4
