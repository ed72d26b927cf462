"""`lion report` (lion_cli.report): the page's content is tested with lion_core.report_html."""

import os

from lion_core.files import join_uri
from lion_core.report import FINAL_REPORT
from tests.lion_cli.lion_script import lion
from tests.lion_core.test_report_html import make_finished_run


def test_report_writes_one_page_for_the_run_of_the_config(config, tmp_path):
    make_finished_run(tmp_path / "runs")
    out = tmp_path / "out" / "report.html"
    r = lion("report", "r1", "--config", config, "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"report of run r1 -> {out}" in r.stdout
    page = out.read_text(encoding="utf-8")
    assert "<title>Lion run r1</title>" in page and "r1-eval" in page and page.count("data:image/png;base64,") == 5
    assert os.listdir(out.parent) == ["report.html"]  # the temp file it was written to is renamed, not left


def test_report_without_a_config_finds_the_run_and_its_evaluation_under_the_runs_root(tmp_path):
    store = make_finished_run(tmp_path / "runs")
    os.unlink(join_uri(store.run_uri, FINAL_REPORT))
    r = lion("report", "r1", "--out", "page.html", cwd=tmp_path)  # the runs root is `runs` in the current folder
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "62.5%" in page and "Not published yet" in page


def test_report_of_a_run_that_does_not_exist_writes_nothing(config, tmp_path):
    out = tmp_path / "report.html"
    r = lion("report", "nope", "-c", config, "--out", out)
    assert r.returncode == 1
    assert "lion: error: no run 'nope' under" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
