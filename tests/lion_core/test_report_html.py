"""`lion report`'s page (lion_core.report_html): built from a small run written straight into a store, its
content checked as text, and the page rendered by headless Chromium to see that every chart loads."""

import html
import json
import os
import re
import shutil
import subprocess
import uuid

import fsspec
import pytest

from lion_core.config import RunConfig
from lion_core.evaluation_store import SCORES_SCHEMA_VERSION, ScoreRow
from lion_core.files import join_uri, write_bytes_atomic
from lion_core.plots import gap_histogram, hard_fraction
from lion_core.pools import POOL_SCHEMA_VERSION, make_row, pool_table
from lion_core.report import FINAL_REPORT, write_summary
from lion_core.report_html import CSP, load_report, render_html, run_evaluation_id
from lion_core.results import IterationSummary, UsageRow
from lion_core.rows import to_table
from lion_core.store import RunStore

HOSTILE = "<script>alert('x')</script> & \"quoted\""


def summary(run_id: str, k: int, plots: dict[str, str]) -> IterationSummary:
    usage = [UsageRow(role="teacher", stage="imitation", requests=4, calls=4, prompt_tokens=40, completion_tokens=80,
                      cost_usd=0.25 * (k + 1))]
    return IterationSummary(
        run_id=run_id, iteration=k, train_pool=10 + k, cache_pool=20 + k, next_train_pool=3, next_cache_pool=23 + k,
        judged=9, hard=4 - k, easy=4, unresolved=1, hard_fraction=(4 - k) / (8 - k), coverage_teacher_first=1.0,
        coverage_student_first=1.0, order_inconsistency_rate=0.25, mean_teacher_score=7.5, mean_student_score=5.0,
        generation_target=4, accepted=3 + k, accepted_hard=2, accepted_easy=1 + k, generation_requests=6,
        generation_outcome="target reached", rejected_by_reason={}, usage=usage, usage_by_role=usage,
        cost_usd=0.25 * (k + 1), checkpoint=f"/ck/iter-{k}/final", files={}, plots=plots)


def make_finished_run(runs_root, run_id: str = "r1", *, evaluated: bool = True) -> RunStore:
    """Two iterations with their summaries and charts, final.json and (if `evaluated`) the evaluation's scores
    and charts where `lion run` leaves them: what the report reads, without running the loop."""
    config = RunConfig()
    store = RunStore(str(runs_root), run_id, config)
    store.write_run_info()
    for k in range(2):
        pool = pool_table([make_row(f"Instruction {i} of iteration {k}.", origin="seed", iteration=k) for i in range(3)])
        store.commit(k, {"train_pool": store.write_table(k, "train_pool", pool, schema_version=POOL_SCHEMA_VERSION)})
        plots = {}
        for name, png in (("score_gap", gap_histogram([-1.0, 0.5, 2.0, 3.5], 1.0, k)),
                          ("hard_fraction", hard_fraction([(i, 0.5 - 0.1 * i) for i in range(k + 1)]))):
            plots[name] = join_uri(store.iteration_uri(k), "plots", f"{name}.png")
            write_bytes_atomic(plots[name], png)
        plots[HOSTILE] = join_uri(store.iteration_uri(k), "plots", "gone.png")  # listed, never written
        write_summary(store, k, summary(run_id, k, plots))
    final = {"status": "carried", "source_iteration": 1, "reason": HOSTILE, "train_rows": 12,
             "path": f"run://{run_id}/checkpoints/iter-1/final", "iteration": 2,
             "final_checkpoint": f"/ck/{run_id}/final", "cost_usd": 0.5,
             "usage": [UsageRow(role="teacher", stage="imitation", requests=2, calls=2, cost_usd=0.5).model_dump()]}
    write_bytes_atomic(join_uri(store.run_uri, FINAL_REPORT), json.dumps(final).encode())
    if evaluated:
        ev = RunStore(join_uri(str(runs_root), "evaluations"), run_evaluation_id(run_id), config)
        ev.write_run_info()
        rows = [ScoreRow(checkpoint=label, category=cat, questions=8, relative_score=score,
                         relative_score_ci95_low=score - 0.05, relative_score_ci95_high=score + 0.05,
                         relative_score_reference_first=score, relative_score_student_first=score, wins=w, ties=1,
                         losses=7 - w, judged_reference_first=8, judged_student_first=8, failed_reference_first=0,
                         failed_student_first=0, order_inconsistency_rate=0.0)
                for label, score, w in (("base", 0.25, 0), (f"{run_id}-iter-0", 0.4, 1), (f"{run_id}-final", 0.625, 3))
                for cat in ("all", "writing")]
        ref = ev.write_table(0, "scores", to_table(rows, ScoreRow), schema_version=SCORES_SCHEMA_VERSION)
        ev.commit(0, {"scores": ref})
        write_bytes_atomic(join_uri(ev.iteration_uri(0), "plots", "relative_by_checkpoint.png"),
                           hard_fraction([(0, 0.25), (1, 0.4), (2, 0.625)]))
    return store


def text_of(page: str) -> str:
    """The page's text, tags dropped and entities decoded, with single spaces."""
    body = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


@pytest.fixture(params=["local", "memory"])
def runs_root(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "runs")
        return
    root = f"memory://lion-report-{uuid.uuid4().hex[:8]}/runs"
    yield root
    fsspec.filesystem("memory").rm(root, recursive=True)


def test_the_page_holds_the_iterations_the_scores_the_final_checkpoint_and_the_charts(runs_root):
    page = render_html(load_report(make_finished_run(runs_root)))
    text = text_of(page)
    for row in ("0 10 20 4 4 1 50% 25% 3 23 0.2500", "1 11 21 3 4 1 43% 25% 4 24 0.5000"):
        assert row in text, row  # iteration, pools, hard/easy/unresolved, hard %, order inc., accepted, next, cost
    assert "Total API cost: 1.2500 USD (2 iteration(s) and the final imitation, 0.5000 USD)" in text
    for row in ("base 25.0% 20.0% to 30.0% 0 / 1 / 7", "iteration 0 40.0% 35.0% to 45.0% 1 / 1 / 6",
                "final 62.5% 57.5% to 67.5% 3 / 1 / 4"):
        assert row in text, row
    assert f"checkpoint /ck/r1/final status carried what carried from iteration 1: {HOSTILE}" in text
    assert "teacher interactive 2 0 2 0 0 0.5000" in text  # the final imitation's usage
    # every chart the run saved, embedded; the one it lost is named instead of showing a broken image
    assert page.count('<img alt="') == 5 and page.count("data:image/png;base64,iVBORw0KGgo") == 5
    assert text.count("Chart not shown: file not found") == 2
    assert "relative by checkpoint" in text and "Iteration 1" in text


def test_strings_from_the_run_are_escaped_and_nothing_is_loaded_from_elsewhere(tmp_path):
    page = render_html(load_report(make_finished_run(tmp_path / "runs")))
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in page
    assert re.findall(r'\bsrc="(?!data:image/png;base64,)', page) == []
    assert not re.search(r"\bhref=|url\(|@import|<link|<iframe|<object", page)
    assert f'content="{CSP}"' in page


def test_a_run_without_evaluation_or_final_checkpoint_says_so(tmp_path):
    store = make_finished_run(tmp_path / "runs", "plain", evaluated=False)
    os.unlink(join_uri(store.run_uri, FINAL_REPORT))
    text = text_of(render_html(load_report(store)))
    assert f"No evaluation of this run (plain-eval) under {tmp_path / 'runs' / 'evaluations'}" in text
    assert "Not published yet: the run has no final.json" in text
    assert "0 10 20 4 4 1 50% 25% 3 23 0.2500" in text and "Total API cost: 0.7500 USD (2 iteration(s))" in text


def test_a_missing_run_is_an_error_naming_it(tmp_path):
    from lion_core.errors import StoreError

    with pytest.raises(StoreError, match=r"no run 'nope' under"):
        load_report(RunStore(str(tmp_path / "runs"), "nope"))


# -- the page in a browser ----------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Writes what the browser made of each image into the DOM, which --dump-dom then prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({widths: [...document.images].map(i => i.complete ? i.naturalWidth : -1),
                                    height: document.body.scrollHeight, title: document.title});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def chromium():
    """A Chromium or Chrome binary: LION_CHROMIUM, else the first of BROWSERS on PATH. .ci/run installs
    Debian's chromium, so CI fails without one where a developer's machine skips."""
    found = os.environ.get("LION_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        reason = f"no browser for the HTML report test: none of {', '.join(BROWSERS)} on PATH and no LION_CHROMIUM " \
                 "(Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def rendered(chromium: str, page_file, profile) -> dict:
    """Load the page in headless Chromium and return what PROBE saw once the page had loaded."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page_file.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"Chromium rendered no probe (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_the_page_renders_in_chromium_with_every_chart_loaded(chromium, tmp_path):
    page = render_html(load_report(make_finished_run(tmp_path / "runs")))
    # The probe is the only script, so the page's policy must let inline scripts run; images stay data: only.
    # Two controls prove the probe sees failures: a broken PNG, and an image from elsewhere that the policy blocks.
    probed = page.replace(f'content="{CSP}"', f'content="{CSP}; script-src \'unsafe-inline\'"').replace(
        "</body>", '<img src="data:image/png;base64,AAAA"><img src="http://127.0.0.1:9/x.png">' + PROBE + "</body>")
    target = tmp_path / "report.html"
    target.write_text(probed, encoding="utf-8")
    seen = rendered(chromium, target, tmp_path / "profile")
    assert seen["title"] == "Lion run r1"
    assert len(seen["widths"]) == page.count("<img ") + 2 == 7
    assert all(w > 0 for w in seen["widths"][:-2]), seen["widths"]
    assert seen["widths"][-2:] == [0, 0], seen["widths"]
    assert seen["height"] > 1000  # five charts laid out, not an empty page
