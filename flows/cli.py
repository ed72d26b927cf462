"""The `lion` command line: store commands call lion_core directly; `run` and `limits` use Prefect
(imported only by the commands that need it, so the others start fast).

Errors meant for the user (LionError) print as one message and exit 1; anything else prints one line
and exits 2. `--debug`, anywhere on the command line, shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Annotated

import typer

from lion_core.config import RunConfig, load_config
from lion_core.errors import LionError
from lion_core.results import RunResult

app = typer.Typer(
    help="Lion adversarial distillation.", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
)
pools_app = typer.Typer(help="Inspect a run's pools.", no_args_is_help=True)
config_app = typer.Typer(help="Check run configs and explain their fields.", no_args_is_help=True)
limits_app = typer.Typer(help="The Prefect concurrency limits that share each API key's budget.", no_args_is_help=True)
app.add_typer(pools_app, name="pools")
app.add_typer(config_app, name="config")
app.add_typer(limits_app, name="limits")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Run config (YAML).")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """Lion adversarial distillation."""


@app.command()
def init(
    config: ConfigOpt,
    seed: Annotated[str | None, typer.Option("--seed", "-s", help="Seed file/URI or hf:<org>/<name>; default: data.seed")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Name of the run; default: a timestamp.")] = None,
) -> None:
    """Create iteration 0 of a run: Train Pool = Cache Pool = the seed set."""
    from lion_core.runs import init_run
    from lion_core.store import resolve_uri

    cfg = load_config(config)
    result = init_run(cfg, seed_source=seed, run_id=run_id)
    typer.echo(f"run {result.run_id} created at {result.run_uri}")
    typer.echo(f"  seed:        {result.seed_uri}")
    typer.echo(f"  read:        {result.records_read} records, {result.duplicates_dropped} exact duplicates dropped")
    for name, ref in (("train_pool", result.train_pool), ("cache_pool", result.cache_pool)):
        typer.echo(f"  {name}:  {ref.rows} rows  sha256 {ref.sha256[:16]}  {resolve_uri(ref.uri)}")


@app.command()
def run(
    config: ConfigOpt,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Name of a new run; default: a timestamp.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue this existing run.")] = None,
    iterations: Annotated[int | None, typer.Option("--iterations", "-n", min=1, help="Default: loop.iterations.")] = None,
    seed: Annotated[str | None, typer.Option("--seed", "-s", help="Seed file/URI for a new run; default: data.seed")] = None,
) -> None:
    """Run the Lion loop as a Prefect flow (a server if PREFECT_API_URL is set, else a local one)."""
    from lion_core.store import RunStore, new_run_id

    cfg = load_config(config)
    if resume and run_id:
        raise typer.BadParameter("give --run-id for a new run or --resume for an existing one, not both")
    rid = resume or run_id or new_run_id()
    exists = RunStore(cfg.storage.runs_root, rid).exists()
    if resume and not exists:
        raise LionError(f"no run {rid!r} under {cfg.storage.runs_root} to resume")
    if not resume and exists:
        raise LionError(f"run {rid!r} already exists under {cfg.storage.runs_root}; continue it with --resume {rid}")
    _preflight(cfg if seed is None else cfg.model_copy(update={"data": cfg.data.model_copy(update={"seed": seed})}),
               new_run=not exists)
    prefect_setup()
    from prefect import tags

    from flows.lion import lion

    with tags(PROCESS_TAG):
        result = lion(config_path=str(config), run_id=rid, iterations=iterations, seed=seed)
    _print_result(result, cfg)


def _preflight(cfg, new_run: bool) -> None:
    """Fail before starting anything, with every problem at once (lion_core.preflight)."""
    from lion_core.preflight import preflight_problems

    if problems := preflight_problems(cfg, new_run=new_run):
        raise LionError(f"the run cannot start; {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def prefect_setup() -> None:
    """Before Prefect is imported: our logger in the run's logs, Prefect's usage analytics off (they
    call out to the internet, which a GPU node often cannot reach, and log errors when they fail), and
    our own local API server unless PREFECT_API_URL names one (flows.local_api says why). Settings the
    environment already holds win."""
    from flows.local_api import use_local_api_unless_configured

    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "lion")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    use_local_api_unless_configured()


def _print_result(result: RunResult, cfg: RunConfig) -> None:
    from lion_core.checkpoints import final_text
    from lion_core.report import summary_text_table
    from lion_core.store import resolve_uri

    typer.echo(f"\nrun {result.run_id}: {len(result.iterations)} iteration(s) at {result.run_uri}")
    evaluation = result.evaluation
    if result.iterations:
        typer.echo(summary_text_table(result.iterations, evaluation.scores if evaluation else None))
        if evaluation:
            typer.echo(f"  rel. score: student / teacher score sums on {cfg.evaluation.eval_set}, judged in both orders "
                       f"by the referee ({cfg.referee.model}); evaluation {evaluation.eval_id}")
        last = result.iterations[-1]
        typer.echo(f"\n  {final_text(result.final_checkpoint, result.final)}")
        typer.echo(f"  pools:       {result.run_uri}/iter-*/  (lion pools show {result.run_id} --config ...)")
        typer.echo(f"  checkpoints: {resolve_uri(last.checkpoint or '')} (last iteration), {result.final_checkpoint} (final)")
        typer.echo(f"  plots:       {', '.join(sorted(last.plots.values()))}")
        typer.echo(f"  responses:   {cfg.storage.response_store_path()}")


@app.command()
def evaluate(
    config: ConfigOpt,
    checkpoints: Annotated[list[str], typer.Option("--checkpoints", "-k", help="A model folder, `base`, or "
                           "`run:<run id>` (the base model, every trained iteration and the final checkpoint); "
                           "repeat or separate with commas.")],
    eval_set: Annotated[str | None, typer.Option("--eval-set", "-e", help="Questions (JSONL, JSON or Parquet); "
                        "default: evaluation.eval_set")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Evaluation id; repeating one resumes it.")] = None,
) -> None:
    """Judge checkpoints against the reference model, in both orders: relative score per category."""
    from lion_core.evaluation import resolve_checkpoints

    specs = [s.strip() for item in checkpoints for s in item.split(",") if s.strip()]
    cfg = load_config(config)
    resolve_checkpoints(cfg, specs)  # fail before starting anything
    if not (eval_set or cfg.evaluation.eval_set):
        raise LionError("no eval set: pass --eval-set or set evaluation.eval_set in the config")
    prefect_setup()
    from prefect import tags

    from flows.evaluate import evaluate as evaluate_flow
    from lion_core.evaluation import scores_markdown
    from lion_core.store import new_run_id, resolve_uri

    with tags(PROCESS_TAG):
        result = evaluate_flow(config_path=str(config), checkpoints=specs, eval_set=eval_set,
                               name=name or f"eval-{new_run_id()}")
    typer.echo(scores_markdown(f"evaluation {result.eval_id}", result.scores,
                               cfg.evaluation.reference.model, (cfg.evaluation.judge or cfg.referee).model))
    typer.echo(f"\nresults: {resolve_uri(result.files['results'])}\nscores:  {resolve_uri(result.files['scores'])}")
    typer.echo("charts:  " + ", ".join(result.plots.values()))


@limits_app.command("apply")
def limits_apply(config: ConfigOpt) -> None:
    """Create or update one global concurrency limit per API key of the config, and the `gpu` tag's limit
    (`orchestration.gpu_slots` fine-tunes and student-inference tasks at once on this Prefect server)."""
    prefect_setup()
    from tasks.limits import apply_gpu_limit, apply_limits

    cfg = load_config(config)
    for row in apply_limits(cfg):
        typer.echo(f"{row['name']}: {row['slots']} shard slot(s) for {', '.join(row['roles'])} ({row['action']})")
    gpu = apply_gpu_limit(cfg)
    typer.echo(f"{gpu['name']}: {gpu['slots']} task(s) tagged {gpu['tag']!r} at once: fine-tunes and student "
               f"answers, across every run on this server ({gpu['action']})")


@pools_app.command("show")
def pools_show(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Take the runs root from this config.")] = None,
    runs_root: Annotated[str | None, typer.Option("--runs-root", help="Runs root folder or URI (default: runs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Pool sizes and origins per iteration, lineage, and hash verification of every file."""
    from lion_core.runs import describe_run

    if config is not None and runs_root is not None:
        raise typer.BadParameter("give --config or --runs-root, not both")
    root = runs_root or (load_config(config).storage.runs_root if config else "runs")
    desc = describe_run(root, run_id)
    bad = [f for it in desc["iterations"] for f in it["files"] if not f["verified"]]
    if as_json:
        typer.echo(json.dumps(desc, indent=2))
    else:
        _print_run(desc)
    if bad:
        raise LionError(f"{len(bad)} file(s) failed verification: " + "; ".join(f["error"] for f in bad))


def _print_run(desc: dict) -> None:
    typer.echo(f"run {desc['run_id']}  ({desc['run_uri']})")
    typer.echo(f"  created {desc['created_at']}  config {str(desc['config_hash'])[:12]}  code {desc['code_version']}")
    if desc.get("seed"):
        s = desc["seed"]
        typer.echo(f"  seed {s['uri']}: {s['records_read']} records, {s['duplicates_dropped']} duplicates dropped")
    for it in desc["iterations"]:
        typer.echo(f"iteration {it['iteration']}  (updated {it['updated_at']})")
        for f in it["files"]:
            status = "ok" if f["verified"] else "FAILED"
            origins = ", ".join(f"{k}={v}" for k, v in f.get("origins", {}).items())
            typer.echo(f"  {f['name']:<16} {f['rows']:>8} rows  sha256 {f['sha256'][:16]}  [{status}]"
                       + (f"  origins: {origins}" if origins else ""))
            for p in f["parents"]:
                typer.echo(f"  {'':<16} <- {p['uri']}" + (f"  sha256 {p['sha256'][:16]}" if p.get("sha256") else ""))


def _run_store(run_id: str, config: Path | None, runs_root: str | None):
    """A finished or running run's store and config: `--config` (its storage settings locate the run),
    else the config the run recorded, found under `--runs-root` (default: runs)."""
    from lion_core.runs import recorded_config
    from lion_core.store import RunStore

    if config is not None and runs_root is not None:
        raise typer.BadParameter("give --config or --runs-root, not both")
    cfg = load_config(config) if config else None
    store = RunStore(cfg.storage.runs_root if cfg else runs_root or "runs", run_id, cfg)
    if cfg is None:  # the recorded config names the root the run was made under; the run may have moved since
        cfg = recorded_config(store)
        cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"runs_root": store.runs_root})})
    return store, cfg


RunConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Locate the run with this config's storage "
                                                                          "settings; default: the run's own config.")]
RunsRootOpt = Annotated[str | None, typer.Option("--runs-root", help="Runs root folder or URI (default: runs).")]


@app.command("export-model")
def export_model_command(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    out: Annotated[Path, typer.Option("--out", help="New folder to write the model to.")],
    merge: Annotated[bool, typer.Option("--merge/--no-merge", help="Fold a LoRA adapter into its base: a plain "
                                                                    "transformers model (vLLM loads it as it is).")] = False,
    iteration: Annotated[int | None, typer.Option("--iteration", min=0, help="Export this iteration's checkpoint "
                                                                              "instead of the final one.")] = None,
    config: RunConfigOpt = None,
    runs_root: RunsRootOpt = None,
) -> None:
    """Write the run's final student (or one iteration's) to a folder: a full model as it is, a LoRA
    adapter as it is or, with --merge, folded into its base."""
    from lion_core.model_export import export_model, model_source

    store, cfg = _run_store(run_id, config, runs_root)
    done = export_model(model_source(store, cfg, iteration), out, merge=merge, student=cfg.student)
    what = {"full": "full model", "adapter": f"LoRA adapter of {done.adapter_base}",
            "merged": f"merged model (adapter folded into {done.adapter_base})"}[done.kind]
    typer.echo(f"{done.out}: {what}, from {done.source}")
    if merge and done.kind == "full":
        typer.echo("  (a full fine-tune has no adapter to merge: copied as it is)")


@app.command("export-dataset")
def export_dataset_command(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset to (an earlier export of this "
                                                    "run there is replaced).")],
    push_to_hub: Annotated[str | None, typer.Option(
        "--push-to-hub", help="Also upload it as this Hugging Face dataset repo (user/name); token from HF_TOKEN.")] = None,
    private: Annotated[bool, typer.Option("--private/--public", help="Visibility of a repo the push creates.")] = True,
    license: Annotated[str, typer.Option("--license", help="Licence id for the card (the teacher's terms apply "
                                                           "to its answers).")] = "other",
    language: Annotated[list[str] | None, typer.Option("--language", help="Language code of the data (repeatable).")] = None,
    config: RunConfigOpt = None,
    runs_root: RunsRootOpt = None,
) -> None:
    """Write what the run distilled (instructions, teacher answers, origins, iterations, referee scores) as
    Parquet with a Hugging Face dataset card, and optionally push it to the Hub."""
    from lion_core.dataset_export import push_to_hub as push
    from lion_core.dataset_export import write_dataset

    store, cfg = _run_store(run_id, config, runs_root)
    done = write_dataset(store, cfg, out, license=license, languages=language or ["en"])
    origins = ", ".join(f"{k}={v}" for k, v in done.by_origin.items())
    typer.echo(f"{done.out}: {done.rows} instructions ({origins}), {done.answered} with a teacher answer")
    typer.echo(f"  data: {done.out}/{done.data_file}  sha256 {done.sha256[:16]}")
    if push_to_hub:
        typer.echo(f"  pushed: {push(out, push_to_hub, private=private)}")


@app.command()
def dedup(
    against: Annotated[str, typer.Option("--against", help="Pool to compare with (any seed format).")],
    candidates: Annotated[str, typer.Option("--candidates", help="Candidate instructions (any seed format).")],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="Reject when ROUGE-L F1 > this.")] = 0.7,
    tokenizer_name: Annotated[str, typer.Option("--tokenizer", help="rouge (rouge-score compatible) or unicode.")] = "rouge",
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """ROUGE-L novelty filter: mark each candidate accepted or not, with its best match."""
    import io

    import pyarrow.parquet as pq

    from lion_core.dedup import dedup as run_dedup
    from lion_core.novelty import TOKENIZERS
    from lion_core.store import write_bytes_atomic

    if tokenizer_name not in TOKENIZERS:
        raise typer.BadParameter(f"use one of {', '.join(TOKENIZERS)}", param_hint="--tokenizer")
    if out.exists() and not force:
        raise LionError(f"{out} exists; pass --force to overwrite it")
    table = run_dedup(against, candidates, threshold, tokenizer_name)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(str(out.resolve()), buf.getvalue())
    kept = sum(table.column("accepted").to_pylist())
    typer.echo(f"{kept} of {table.num_rows} candidates accepted (ROUGE-L <= {threshold}, {tokenizer_name} tokens) -> {out}")


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    probe: Annotated[bool, typer.Option("--probe/--no-probe", help="Ask each API endpoint for its models (free).")] = True,
) -> None:
    """Validate a run config, check every file, key and endpoint it names, and print its hash."""
    from lion_core.preflight import preflight_problems

    cfg = load_config(file)
    problems = preflight_problems(cfg, new_run=True, probe=probe)
    if problems:
        raise LionError(f"{file}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    typer.echo(f"{file}: ok  (config hash {cfg.config_hash()[:16]})")
    for role in ("teacher", "referee", "generator"):
        r = getattr(cfg, role)
        key = f"key from ${r.api_key_env}" if r.api_key_env else "no key"
        typer.echo(f"  {role:<9} {r.model} @ {r.base_url}  ({key})")
    typer.echo(f"  student   {cfg.student.model}  ({cfg.student.prompt_format} prompts)")
    t = cfg.training
    adapters = f", rank {t.lora.rank} adapters on {t.lora.target_modules}" if t.method != "full" else ""
    typer.echo(f"  training  {t.method}{adapters}, {t.launcher} on {t.world_size} process(es), "
               f"DeepSpeed {Path(t.deepspeed_config).name if t.deepspeed_config else 'off'}")
    typer.echo(f"  loop      {cfg.loop.iterations} iterations, {cfg.loop.new_instructions_per_iteration} new per iteration, "
               f"tau {cfg.loop.tau}, ROUGE-L <= {cfg.loop.rouge_l_threshold}")
    typer.echo(f"  runs root {cfg.storage.runs_root}")


@config_app.command("explain")
def config_explain(
    field: Annotated[str | None, typer.Argument(help="A section or field, e.g. teacher.rate_limits or "
                                                        "loop.tau; default: every field.")] = None,
) -> None:
    """Print each config field's type, default and meaning: every field, or those under FIELD."""
    from lion_core.config_help import explain

    typer.echo(explain(field))


def _fewer_malloc_arenas() -> None:
    """glibc gives each thread its own heap arena (up to 8 per core), and the flow's task threads,
    Prefect's API server, the embedded servers and the fine-tune all run many threads. Two arenas per
    process keep the memory their freed blocks pin down small; children inherit the setting."""
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, int(os.environ["MALLOC_ARENA_MAX"]))  # M_ARENA_MAX, for us
    except (OSError, AttributeError, ValueError):  # not glibc
        pass


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    _fewer_malloc_arenas()
    # A flow run turns SIGTERM into a crash state and then re-sends it to the handler it found; with
    # Python's default there, the process would die on the spot and leave Prefect's local API server
    # (and anything else stopped at exit) running. Ours stops them and exits 143.
    signal.signal(signal.SIGTERM, _terminated)
    _watch_for_stops()
    try:
        app()
        code = 0
    except SystemExit as done:  # click ends every command this way
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            typer.echo(done.code, err=True)
    except LionError as err:
        if debug:
            raise
        typer.echo(f"lion: error: {err}", err=True)
        code = 1
    except KeyboardInterrupt:
        typer.echo("lion: interrupted", err=True)
        code = 130
    except Exception as err:  # noqa: BLE001 - the last line of defence for a readable message
        if debug:
            raise
        typer.echo(f"lion: internal error: {type(err).__name__}: {err} (run with --debug for the traceback)", err=True)
        code = 2
    if _stop_asked:  # however the stop surfaced (KeyboardInterrupt, a crashed flow run): the shell's code
        code = 128 + _stop_asked[0]
    _exit(code)


def _terminated(signum: int, frame: object) -> None:
    typer.echo("lion: stopped by SIGTERM; what finished is kept, resume with --resume", err=True)
    _exit(128 + signum)


STOP_GRACE_S = 10.0
"""After SIGTERM or Ctrl-C, how long the orderly stop may take (Prefect marks its flow runs crashed,
servers stop, exit handlers run) before `lion` marks its runs crashed itself and exits. The orderly
stop can wait without bound: the task runner joins its threads, and a shard may be waiting for a slot
or a reply. What `lion` started ends with it (lion_core.lifeline)."""
PROCESS_TAG = f"lion-process-{uuid.uuid4().hex[:12]}"
"""Tag of every flow and task run this process makes: what to mark crashed when it is stopped."""
_stop_asked: list[int] = []


def _watch_for_stops() -> None:
    """Arm a deadline at the first SIGTERM or SIGINT, whoever handles the signal. During a flow run
    Prefect's own SIGTERM handler is installed, and after it runs the main thread may wait on worker
    threads (a shard waiting for a slot, a request in flight) without bound; the signal module writes
    every signal's number to the wakeup fd before any Python handler runs, and a thread reads it."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a handler, so that SIGINT is written too

    def watch() -> None:
        while True:
            for signum in os.read(read_fd, 64):
                if signum in (signal.SIGTERM, signal.SIGINT):
                    _stop_deadline(signum)

    threading.Thread(target=watch, name="lion-stop-watch", daemon=True).start()


def _stop_deadline(signum: int) -> None:
    if _stop_asked:  # a second signal: no more waiting
        _overdue(128 + _stop_asked[0], "a second signal")
        return
    _stop_asked.append(signum)
    timer = threading.Timer(STOP_GRACE_S, _overdue, (128 + signum, f"{STOP_GRACE_S:.0f} s"))
    timer.daemon = True
    timer.start()


def _overdue(code: int, why: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        name = signal.Signals(code - 128).name if code > 128 else "a signal"
        sys.stderr.write(f"lion: stopped by {name} (forced, {why} after it); what finished is kept, resume with --resume\n")
        sys.stderr.flush()
    marker = threading.Thread(target=_mark_crashed, daemon=True)
    marker.start()
    marker.join(8.0)  # the API is ours and up; if it is not, stopping matters more than the record
    os._exit(code)


def _mark_crashed() -> None:
    """Mark this process's unfinished flow and task runs Crashed, as Prefect does on an orderly stop."""
    if "prefect" not in sys.modules:
        return
    try:
        from prefect import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
            TaskRunFilter,
            TaskRunFilterState,
            TaskRunFilterStateType,
            TaskRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.states import Crashed

        live = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]

        def state() -> Crashed:
            return Crashed(message="lion was stopped (SIGTERM or Ctrl-C); resume with --resume")
        with get_client(sync_client=True) as client:
            for r in client.read_task_runs(task_run_filter=TaskRunFilter(
                    tags=TaskRunFilterTags(all_=[PROCESS_TAG]),
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=live)))):
                client.set_task_run_state(r.id, state(), force=True)
            for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[PROCESS_TAG]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live)))):
                client.set_flow_run_state(r.id, state(), force=True)
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


def _exit(code: int) -> None:
    """Leave with `code`. Arrow's C++ thread pools can abort the interpreter's final teardown ("terminate
    called without an active exception", apache/arrow#34314), turning a finished command into exit -6
    now and then; so the exit handlers run (the embedded server's and Prefect's shutdown, logging's
    flush) and the process ends without that teardown."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`lion ... | head`), a closed stream
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
