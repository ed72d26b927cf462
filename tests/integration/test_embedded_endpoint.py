"""The gateway against the real embedded endpoint: `transformers serve` with SmolLM2-135M-Instruct."""

import signal
import subprocess
import sys
import urllib.request

import pytest

from lion_core.config import load_config
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore
from lion_core.llm.embedded import EmbeddedServer, embedded_model_dir
from tests.helpers import process_alive, wait_until_gone

pytestmark = pytest.mark.slow


def test_model_is_converted_once_and_reused(model_dir):
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    assert (model_dir / ".complete").is_file()
    mtime = (model_dir / "model.safetensors").stat().st_mtime
    assert embedded_model_dir() == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime == mtime


def test_short_requests_through_the_gateway(server, tmp_path, repo):
    cfg = load_config(repo / "configs" / "embedded.yaml")
    with ResponseStore(str(tmp_path / "r.sqlite")) as store:
        gw = Gateway(Endpoint.from_config("teacher", cfg.teacher, embedded=server.endpoint), store)
        reqs = [ChatRequest.of([("user", q)], temperature=0.0, max_tokens=12)
                for q in ("Name a colour.", "What is 2 plus 2?", "Say hello in French.")]
        results = gw.run_sync(reqs, "imitation")
        assert all(r.ok for r in results), [r.error_message for r in results]
        for r in results:
            assert r.text.strip() and r.finish_reason in ("stop", "length")
            assert r.prompt_tokens > 0 and 0 < r.completion_tokens <= 12
        again = gw.run_sync(reqs, "imitation")
        assert [r.text for r in again] == [r.text for r in results] and all(r.cached for r in again)
        assert gw.accounting.row("teacher", "imitation").calls == 3  # the rerun made no calls
        assert store.counts() == {"ok": 3}


def test_embedded_keys_do_not_depend_on_the_port(server, repo):
    cfg = load_config(repo / "configs" / "embedded.yaml")
    a = Endpoint.from_config("teacher", cfg.teacher, embedded=server.endpoint)
    b = Endpoint.from_config("teacher", cfg.teacher, embedded=("http://127.0.0.1:1/v1", server.served_model))
    req = ChatRequest.of([("user", "x")])
    assert req.key(a.endpoint_id, a.model) == req.key(b.endpoint_id, b.model)


def test_server_stops_cleanly(model_dir):
    srv = EmbeddedServer(model_dir).start()
    pid, url = srv.pid, f"http://127.0.0.1:{srv.port}/health"
    assert urllib.request.urlopen(url, timeout=5).status == 200
    srv.stop()
    assert not process_alive(pid)
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_server_dies_with_a_killed_caller(model_dir, tmp_path):
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from lion_core.llm.embedded import EmbeddedServer\n"
        "srv = EmbeddedServer(Path(sys.argv[1])).start()\n"
        "print(srv.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", code, str(model_dir)], stdout=subprocess.PIPE, text=True)
    server_pid = int(caller.stdout.readline())
    assert process_alive(server_pid)
    caller.send_signal(signal.SIGKILL)
    caller.wait(10)
    assert wait_until_gone(server_pid, timeout_s=30)


def test_every_role_of_the_embedded_config_reaches_the_server_of_its_model(server, standin, endpoints, tmp_path, repo):
    """As a run's tasks build their gateways (tasks.common.api_gateway): the chat model's role goes to
    the chat server, the stand-ins' roles to theirs."""
    from lion_core.config import parse_config
    from lion_core.limits import role_config
    from lion_core.llm.roles import RUN_ROLES

    data = load_config(repo / "configs" / "embedded.yaml").to_json_dict()
    data["storage"]["runs_root"] = str(tmp_path / "runs")
    cfg = parse_config(data)
    urls = {}
    with ResponseStore.open(cfg.storage) as store:
        for role in RUN_ROLES:
            gateway = Gateway(Endpoint.from_config(role, role_config(cfg, role), embedded=endpoints), store)
            urls[role] = gateway.endpoint.base_url
            [r] = gateway.run_sync([ChatRequest.of([("user", "Write one short question.")], max_tokens=10)], role)
            if role == "teacher":
                assert r.ok and r.text
            else:  # the stand-ins answer their own prompts only, and say so: the request reached them
                assert not r.ok and f"not a {role} prompt" in r.error_message, r
    assert urls == {"teacher": server.base_url, "referee": standin.base_url, "generator": standin.base_url}
