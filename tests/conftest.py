import os
import tempfile
from pathlib import Path

import pytest

# Prefect state of the test session lives in its own folder, never in the user's ~/.prefect; set before
# anything imports prefect. Offline: no telemetry.
_PREFECT_HOME = tempfile.mkdtemp(prefix="lion-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(_PREFECT_HOME, "storage")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LION_SHARED_DATA", REPO.parent / "shared" / "data"))


# `make test` runs the tests on two workers (pytest-xdist), a test file at a time; the files of a group
# share a costly session fixture, built once on the worker they all go to.
SAME_WORKER = {
    "tests/flows/test_lion_flow.py": "uninterrupted",  # the session's uninterrupted run
    "tests/flows/test_chaos.py": "uninterrupted",
    "tests/flows/test_plan.py": "uninterrupted",
    "tests/flows/test_spend.py": "uninterrupted",
    "tests/flows/test_evaluate_flow.py": "embedded",  # the embedded servers
    "tests/integration/test_embedded_endpoint.py": "embedded",
    "tests/integration/test_stages_embedded.py": "embedded",
    "tests/integration/test_standin_referee.py": "embedded",
}


# The longest files (or groups) first, so that no worker is left with one of them at the end while the
# other has nothing to do; then the rest in collection order.
LONGEST_FIRST = [
    "tests/flows/test_chaos.py", "tests/flows/test_lion_flow.py", "tests/flows/test_shared_store.py",
    "tests/flows/test_controls.py", "tests/lion_cli/test_status.py",
    "tests/integration/test_student_training.py",
    "tests/flows/test_evaluate_flow.py", "tests/integration/test_stages_embedded.py",
    "tests/integration/test_standin_referee.py", "tests/integration/test_embedded_endpoint.py",
    "tests/bench/test_paper_scale.py", "tests/flows/test_deployment.py", "tests/lion_prefect/test_slot_reclaim.py",
    "tests/flows/test_remote_storage.py", "tests/flows/test_compat.py", "tests/lion_cli/test_preview.py",
]


# a real PostgreSQL server for the response store's tests on that backend (started by the first test that asks)
pytest_plugins = ["tests.postgres"]


def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # the order above, not the files with the most tests first

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SAME_WORKER.get(path, path)

    return SharedFixtureScheduling(config, log)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public seed and eval data beside the checkout (CI always has it)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data not found at {SHARED_DATA}; CI must have it")
        pytest.skip(f"shared data not found at {SHARED_DATA} (set LION_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def prefect_harness():
    """One throw-away Prefect API for the whole session: the local API `lion run` starts (SQLite under
    the session's PREFECT_HOME), so in-process flows meet the server a user's run does."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from lion_prefect.local_api import LocalApi

    api = LocalApi(startup_timeout_s=120).start()
    process_wide = prefect.context.GLOBAL_SETTINGS_CONTEXT
    try:
        with temporary_settings({PREFECT_API_URL: api.url}):
            # for every thread too, as Prefect's own test harness does: a new thread does not inherit the
            # context, reads the process-wide settings, and without the API would start a server of its own
            prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.get_settings_context()
            try:
                yield api
                _drain_prefect_workers()  # the last log lines and events, while the API still answers
            finally:
                prefect.context.GLOBAL_SETTINGS_CONTEXT = process_wide
    finally:
        api.stop()


def _drain_prefect_workers() -> None:
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        for result in (APILogWorker.drain_all(), EventsWorker.drain_all()):
            if inspect.isawaitable(result):
                await result

    run_coro_as_sync(drain())


@pytest.fixture(scope="session")
def model_dir():
    from lion_core.llm.embedded import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def embedded(model_dir):
    """The embedded servers of every embedded model (the chat model's, and the stand-ins' on the same
    weights), started once for the session: each start loads the model (several seconds)."""
    from lion_core.config import EMBEDDED_MODELS
    from lion_core.llm.embedded import EmbeddedServers

    servers = EmbeddedServers(set(EMBEDDED_MODELS)).start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def active_embedded(embedded):
    """The session's embedded servers as the running ones: a flow that needs embedded models uses them,
    as a nested flow uses its parent's, instead of starting its own."""
    from lion_core.llm.embedded import serving

    with serving(embedded):
        yield embedded


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, model_dir):
    """SmolLM2's tokenizer and architecture, shrunk to two thin layers with random weights."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def s3_bucket():
    """A real S3 API on loopback (moto's server, spoken to over HTTP by s3fs and botocore): the stand-in
    for the bucket a Docker or Kubernetes run keeps its files and Prefect results in. Yields the bucket's
    URI; clients find the server through AWS_ENDPOINT_URL, as they would a MinIO."""
    import logging

    import fsspec
    from moto.server import ThreadedMotoServer

    from lion_core.llm.embedded import free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "lion-test", "AWS_SECRET_ACCESS_KEY": "lion-test-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        fsspec.filesystem("s3").mkdir("lion-test")
        yield "s3://lion-test"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
