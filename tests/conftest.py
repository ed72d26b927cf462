import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LION_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public seed and eval data beside the checkout (CI always has it)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data not found at {SHARED_DATA}; CI must have it")
        pytest.skip(f"shared data not found at {SHARED_DATA} (set LION_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def repo() -> Path:
    return REPO
