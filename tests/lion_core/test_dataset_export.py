"""The dataset export's pure parts: size categories, and how a failed push is reported (a loopback Hub)."""

import http.server
import threading

import pytest

from lion_core.dataset_export import HubPushError, push_to_hub, size_category
from lion_core.llm.embedded import free_port

TOKEN = "hf_" + "q7Zx" * 8


@pytest.mark.parametrize("n,label", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (52_002, "10K<n<100K"),
                                     (2_000_000, "1M<n<10M"), (20_000_000, "n>1M")])
def test_size_categories_follow_the_hub(n, label):
    assert size_category(n) == label


class _Refusing(http.server.BaseHTTPRequestHandler):
    status = 401

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": "Invalid credentials in Authorization header"}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status,retryable", [(401, False), (503, True)])
def test_a_push_the_hub_refuses_is_not_retried_and_one_it_could_not_take_is(tmp_path, status, retryable):
    (tmp_path / "README.md").write_text("---\nlicense: other\n---\n")
    handler = type("H", (_Refusing,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(HubPushError) as err:
            push_to_hub(tmp_path, "someone/data", endpoint=f"http://127.0.0.1:{server.server_port}", token=TOKEN)
    finally:
        server.shutdown()
    assert err.value.retryable is retryable and "The export on disk is complete" in str(err.value)
    assert TOKEN not in str(err.value)


def test_a_push_without_a_reachable_hub_may_be_retried(tmp_path):
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(HubPushError) as err:
        push_to_hub(tmp_path, "someone/data", endpoint=f"http://127.0.0.1:{free_port()}", token=TOKEN)
    assert err.value.retryable and "when the Hub is reachable" in str(err.value)
