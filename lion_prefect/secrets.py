"""The response store's password from a Prefect Secret block (`storage.password_secret`), for workers that
get their secrets from Prefect rather than from their environment."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("lion")


def export_store_password(storage: Any) -> bool:
    """Copy the Secret block's value into `storage.password_env` in this process's environment, where the
    store reads it, unless that variable is already set. True when it copied one. A block that cannot be
    read leaves the variable unset, for the preflight check to report by name."""
    if not (storage.shared_store and storage.password_secret and storage.password_env):
        return False
    if os.environ.get(storage.password_env):
        return False
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(storage.password_secret).get()
    except Exception as err:  # noqa: BLE001 - reported as the preflight's problem, by the block's name
        log.warning("storage.password_secret: Prefect Secret block %r could not be read (%s)", storage.password_secret,
                    type(err).__name__)
        return False
    if not isinstance(value, str) or not value:
        log.warning("storage.password_secret: Prefect Secret block %r holds no password", storage.password_secret)
        return False
    os.environ[storage.password_env] = value
    return True
