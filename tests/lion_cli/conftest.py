import pytest

from tests.lion_cli.lion_script import REPO


@pytest.fixture
def config(tmp_path):
    text = (REPO / "configs" / "embedded.yaml").read_text().replace("runs_root: ../runs", f"runs_root: {tmp_path / 'runs'}")
    text = text.replace(": ../", f": {REPO}/")
    p = tmp_path / "embedded.yaml"
    p.write_text(text)
    return p
