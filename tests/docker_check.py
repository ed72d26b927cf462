"""`make docker-check`: the Docker work pool, end to end, on this machine's Docker daemon.

1. Builds the image from this checkout (deployments/build-image.sh: lion-distill:<code version>).
2. Starts a Prefect server and a Docker worker, creates the pool from deployments/work-pools/docker.json
   (its defaults set as a user would: the runs folder, a model-cache volume, no GPUs here, and the API key
   from a Prefect Secret block) and deploys lion-distill from prefect.yaml.
3. Runs a small run in a container to Completed: the embedded student (SmolLM2, pruned), fine-tuned with
   DeepSpeed ZeRO-2 in the container; teacher, referee and generator on an OpenAI-compatible server on
   loopback that wants the key and counts every answer it gives.
4. Runs one more, stops its container (`docker stop`) while the referee is answering, resumes it through a
   new flow run of the deployment, and checks that it completes with no finished request answered again
   (at most the ones in flight when the container stopped).
5. Runs a third with its files in a bucket (an S3 API on loopback) and its response store on PostgreSQL (a
   real server on loopback, the password from a Prefect Secret block), stops its container while the
   teacher is answering, and resumes it through a new flow run in a new container with a fresh runs volume
   (only the config on it): it completes, and no finished request is answered again.
6. Checks that the API key and the store's password reached no log, file or artifact and that no flow run
   is left Running (the stopped attempt's sub-flows are closed by the resumed run); prints the flow runs and
   their states; stops and removes what it started (the image stays: it is the build's product).

Not part of `make test` (CI has no Docker daemon). Needs a running Docker daemon (see the README).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "lion-docker-check"
SECRET_BLOCK = "lion-docker-check-key"
STORE_BLOCK = "lion-docker-check-store"
MOUNT = "/srv/lion"
"""Where the pool mounts the runs volume in the container (deployments/work-pools/docker.json)."""
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def say(msg: str) -> None:
    print(f"[docker-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class CheckFailed(Exception):
    pass


def check(ok: bool, msg: str) -> None:
    if not ok:
        raise CheckFailed(msg)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Check:
    def __init__(self, work: Path, keep: bool):
        self.work = work
        self.keep = keep
        self.procs: list[subprocess.Popen] = []
        self.volume = f"lion-docker-check-cache-{os.getpid()}"
        self.key = "sk-docker-check-" + secrets.token_hex(12)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        # LION_PROJECT_DIR (set by make) would be written into the deployment's pull step by `prefect deploy`
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("PREFECT_") and k not in ("OPENAI_API_KEY", "LION_PROJECT_DIR")}
        self.env.update(PREFECT_HOME=str(work / "prefect"), PREFECT_API_URL=self.api_url,
                        PREFECT_UI_API_URL=self.api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                        PYTHONWARNINGS="ignore")
        self.srv = work / "srv"
        self.api = None
        self.image = ""
        self.postgres = None
        self.s3 = None

    # -- processes ----------------------------------------------------------------------------------
    def start(self, name: str, *cmd: str) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        return p

    def prefect(self, *args: str, env: dict | None = None) -> str:
        r = subprocess.run([str(BIN / "prefect"), *args], env={**self.env, **(env or {})}, cwd=REPO,
                           capture_output=True, text=True, timeout=300)
        check(r.returncode == 0, f"prefect {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r.stdout

    def rest(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"{self.api_url}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    # -- steps --------------------------------------------------------------------------------------
    def build(self) -> None:
        t0 = time.monotonic()
        r = subprocess.run(["bash", "deployments/build-image.sh"], cwd=REPO, capture_output=True, text=True)
        (self.work / "build.log").write_text(r.stderr)
        check(r.returncode == 0, f"image build failed (rc {r.returncode}):\n{r.stderr[-4000:]}")
        self.image = r.stdout.strip().splitlines()[-1]
        check(not self.image.endswith(":latest"), f"image tagged {self.image}")
        say(f"image {self.image} built in {time.monotonic() - t0:.0f} s")

    def serve_api(self) -> None:
        from tests.fault_server import FaultPlan, FaultServer

        # a little latency, so that the referee stage lasts long enough to be stopped in the middle
        self.api = FaultServer(FaultPlan(api_key=self.key, latency_s=0.4, rate_500=0.03, seed=5)).start()
        say(f"OpenAI-compatible API on {self.api.url} (wants the key from the Secret block)")

    def start_prefect(self) -> None:
        self.start("server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.api_url}/health", timeout=2)
                break
            except OSError:
                check(time.monotonic() < deadline, "the Prefect server did not start: see server.log")
                time.sleep(1)
        say(f"Prefect server at {self.api_url}")
        code = f"from prefect.blocks.system import Secret; Secret(value={self.key!r}).save({SECRET_BLOCK!r}, overwrite=True)"
        r = subprocess.run([sys.executable, "-c", code], env=self.env, cwd=REPO, capture_output=True, text=True)
        check(r.returncode == 0, f"saving the Secret block failed: {r.stderr[-2000:]}")

        template = json.loads((REPO / "deployments/work-pools/docker.json").read_text())
        props = template["variables"]["properties"]
        # what a user sets in the pool: where runs live, the model cache, the GPUs and the key's source
        props["runs_volume"]["default"] = str(self.srv)
        props["model_cache_volume"]["default"] = self.volume
        props["gpus"]["default"] = []  # no NVIDIA runtime on this machine
        props["env"]["default"]["OPENAI_API_KEY"] = "{{ prefect.blocks.secret." + SECRET_BLOCK + " }}"
        path = self.work / "docker-pool.json"
        path.write_text(json.dumps(template))
        self.prefect("work-pool", "create", POOL, "--type", "docker", "--base-job-template", str(path))
        self.start("worker", str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "docker",
                   "--limit", "1")
        tag = self.image.split(":", 1)[1]
        self.prefect("--no-prompt", "deploy", "--name", "lion-distill", "--pool", POOL, env={"LION_IMAGE_TAG": tag})
        (dep,) = self.rest("POST", "/deployments/filter", {"deployments": {"name": {"any_": ["lion-distill"]}}})
        check(dep["job_variables"].get("image") == self.image,
              f"the deployment runs {dep['job_variables'].get('image')}, not {self.image}")
        check("{{ $LION_PROJECT_DIR }}" in json.dumps(dep["pull_steps"]),
              f"the pull step was filled in when deploying: {dep['pull_steps']}")
        self.deployment = dep["id"]
        say(f"pool {POOL} (docker), worker started, lion-distill deployed with image {self.image}")

    def write_config(self, name: str, seeds: list[str], storage: dict | None = None, volume: Path | None = None) -> str:
        """A small run: the embedded student fine-tuned in the container; the API roles on loopback.
        `storage` replaces the runs folder on the volume; `volume`: the host folder it is written to."""
        cfg = yaml.safe_load((REPO / "configs/embedded.yaml").read_text())
        api = {"base_url": self.api.url, "model": "check-model", "api_key_env": "OPENAI_API_KEY",
               "sampling": {"temperature": 0.7, "max_tokens": 48},
               "rate_limits": {"requests_per_minute": 6000, "tokens_per_minute": 10_000_000, "max_concurrency": 4},
               "retry": {"max_attempts": 4, "initial_backoff_s": 0.1, "max_backoff_s": 0.5, "request_timeout_s": 30}}
        cfg["teacher"] = api
        cfg["referee"] = {**api, "sampling": {"temperature": 0.0, "max_tokens": 256}, "max_reasks": 1}
        cfg["generator"] = {**api, "sampling": {"temperature": 1.0}}
        cfg["training"]["deepspeed_config"] = "/opt/lion/deployments/deepspeed/zero2.json"
        cfg["loop"].update(iterations=1, new_instructions_per_iteration=6)
        cfg["data"] = {"seed": f"{name}-seeds.jsonl"}
        cfg["storage"] = storage or {"runs_root": "runs"}
        cfg["orchestration"].update(shard_size=8, task_retries=2, retry_delay_s=1)
        cfg["evaluation"].update(after_run=False, eval_set="/opt/lion/data/demo_eval.jsonl")
        volume = volume or self.srv
        (volume / f"{name}-seeds.jsonl").write_text("".join(s + "\n" for s in seeds))
        (volume / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        return f"{MOUNT}/{name}.yaml"

    def shared_store(self) -> None:
        """A PostgreSQL server and an S3 API on loopback (the containers share the host's network): a run's
        store and files somewhere other than the container's volume."""
        from moto.server import ThreadedMotoServer

        from tests.postgres import PostgresServer

        self.postgres = PostgresServer(fast=False).start()
        self.store_url = self.postgres.create_database("lion_docker_check")
        code = (f"from prefect.blocks.system import Secret; "
                f"Secret(value={self.postgres.password!r}).save({STORE_BLOCK!r}, overwrite=True)")
        r = subprocess.run([sys.executable, "-c", code], env=self.env, cwd=REPO, capture_output=True, text=True)
        check(r.returncode == 0, f"saving the store's Secret block failed: {r.stderr[-2000:]}")
        port = free_port()
        self.s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.s3.start()
        self.s3_env = {"AWS_ACCESS_KEY_ID": "lion-check", "AWS_SECRET_ACCESS_KEY": "lion-check-secret",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        import boto3

        boto3.client("s3", endpoint_url=self.s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                     aws_access_key_id="lion-check", aws_secret_access_key="lion-check-secret").create_bucket(Bucket="lion")
        say(f"response store on PostgreSQL {self.store_url} (password in Secret block {STORE_BLOCK}), runs on "
            f"s3://lion at {self.s3_env['AWS_ENDPOINT_URL']}")

    def run(self, name: str, config: str, job_variables: dict | None = None) -> str:
        fr = self.rest("POST", f"/deployments/{self.deployment}/create_flow_run",
                       {"parameters": {"config_path": config, "run_id": name}, "job_variables": job_variables or {}})
        say(f"flow run {fr['name']} ({fr['id']}) of lion-distill: run {name}")
        return fr["id"]

    def state(self, flow_run: str) -> str:
        return self.rest("GET", f"/flow_runs/{flow_run}")["state"]["type"]

    def wait(self, flow_run: str, timeout: float, until=lambda: False) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(flow_run)
            if state in TERMINAL or until():
                return state
            time.sleep(1)
        raise CheckFailed(f"flow run {flow_run} still {self.state(flow_run)} after {timeout:.0f} s")

    def container_of(self, flow_run: str) -> str:
        out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=io.prefect.flow-run-id={flow_run}"],
                             capture_output=True, text=True).stdout.split()
        check(len(out) == 1, f"expected one running container for flow run {flow_run}, found {out}")
        return out[0]

    def referee_answers(self) -> int:
        return sum(n for prompt, n in self.api.stats.successes.items() if "<<<ANSWER OF ASSISTANT 1>>>" in prompt)

    def report(self, run_id: str) -> None:
        """What the run left on the volume: iteration 0's figures and the final checkpoint."""
        summary, final = self.srv / f"runs/{run_id}/iter-0/summary.json", self.srv / f"runs/{run_id}/final.json"
        check(summary.is_file() and final.is_file(), f"run {run_id} left no {summary.name} or {final.name} on the volume")
        s, f = json.loads(summary.read_text()), json.loads(final.read_text())
        check(Path(f["final_checkpoint"].replace(MOUNT, str(self.srv), 1), "config.json").is_file(),
              f"run {run_id}: no final checkpoint at {f['final_checkpoint']}")
        say(f"run {run_id}: iteration 0 judged {s['judged']} ({s['hard']} hard, {s['easy']} easy), accepted "
            f"{s['accepted']} new instructions; final checkpoint {f['final_checkpoint']}")

    def flow_runs(self) -> list[dict]:
        return self.rest("POST", "/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC", "limit": 50})

    def logs(self) -> list[str]:
        rows = self.rest("POST", "/logs/filter", {"limit": 200, "offset": 0})
        out, offset = [], 0
        while rows:
            out += [r["message"] for r in rows]
            offset += len(rows)
            rows = self.rest("POST", "/logs/filter", {"limit": 200, "offset": offset})
        return out

    # -- the check ----------------------------------------------------------------------------------
    def main(self) -> None:
        t0 = time.monotonic()
        self.srv.mkdir(parents=True)
        os.chown(self.srv, 1000, 1000)  # the image's user `lion` writes the runs here
        self.build()
        self.serve_api()
        self.start_prefect()
        seeds = (REPO / "data/demo_seeds.jsonl").read_text().splitlines()

        # 1. a whole run in a container
        first = self.run("dc-first", self.write_config("dc-first", seeds[:12]))
        t1 = time.monotonic()
        state = self.wait(first, 1200)
        check(state == "COMPLETED", f"the first run ended {state}: see worker.log and the run's logs")
        say(f"first run Completed in {time.monotonic() - t1:.0f} s")
        self.report("dc-first")

        # 2. stopped mid-run, resumed through a new flow run
        config = self.write_config("dc-stopped", seeds[12:24])
        judged_before = self.referee_answers()  # the first run's
        stopped = self.run("dc-stopped", config)
        state = self.wait(stopped, 1200, until=lambda: self.referee_answers() >= judged_before + 8)
        check(state not in TERMINAL, f"the second run ended {state} before the referee was reached")
        container = self.container_of(stopped)
        subprocess.run(["docker", "stop", "--time", "5", container], check=True, capture_output=True)
        before = dict(self.api.stats.answered)
        say(f"stopped container {container[:12]} during discrimination "
            f"({self.referee_answers() - judged_before} referee answers)")
        state = self.wait(stopped, 120)
        check(state in ("CRASHED", "FAILED"), f"the stopped run is {state}")
        resumed = self.run("dc-stopped", config)
        t1 = time.monotonic()
        state = self.wait(resumed, 1200)
        check(state == "COMPLETED", f"the resumed run ended {state}")
        say(f"resumed run Completed in {time.monotonic() - t1:.0f} s")
        self.report("dc-stopped")
        again = sum(1 for fp, n in self.api.stats.answered.items() if n > before.get(fp, 0) and before.get(fp, 0) > 0)
        in_flight = 4  # the referee's max_concurrency in this config
        say(f"requests answered before the stop and answered again after it: {again} (bound: {in_flight} in flight)")
        check(again <= in_flight, f"{again} finished requests were sent again")

        # 3. a run whose files are in a bucket and whose store is on PostgreSQL, resumed on a fresh volume
        moved_again = self.moved(seeds[24:36])

        # 4. the key and the store's password went to their servers only
        leaked = [m for m in self.logs() if self.key in m or self.postgres.password in m]
        check(not leaked, f"the API key or the store's password is in {len(leaked)} log lines")
        # everything this check made: the runs volume, the Prefect home (the block's value is kept encrypted),
        # the server's, worker's (the containers' output) and build logs
        hits = subprocess.run(["grep", "-rl", "--binary-files=text", "-e", self.key, "-e", self.postgres.password,
                               str(self.work)], capture_output=True, text=True).stdout.split()
        check(not hits, f"the API key or the store's password is in {hits}")
        check(self.key not in json.dumps(self.rest("GET", f"/deployments/{self.deployment}")),
              "the API key is in the deployment")

        runs = self.flow_runs()
        left = [f"{fr['name']} {fr['state']['type']}" for fr in runs if fr["state"]["type"] not in TERMINAL]
        check(not left, f"flow runs left unfinished: {left}")
        print("\nflow runs:")
        for fr in runs:
            print(f"  {fr['name']:<40} {fr['state']['type']:<10} {json.dumps(fr['parameters'].get('run_id'))}")
        stats = self.api.stats
        print(f"\nAPI: {sum(stats.successes.values())} answers, outcomes {dict(stats.outcomes)}; "
              f"finished requests answered twice: {again} (volume kept), {moved_again} (fresh volume, store on "
              "PostgreSQL)")
        say(f"passed in {time.monotonic() - t0:.0f} s")

    def moved(self, seeds: list[str]) -> int:
        """Step 3: stopped while the teacher answers, resumed in a new container whose runs volume is new."""
        self.shared_store()
        name = "dc-moved"
        storage = {"runs_root": "s3://lion/runs", "response_store": self.store_url, "password_secret": STORE_BLOCK,
                   "checkpoints_root": f"{MOUNT}/checkpoints"}
        first_volume, fresh_volume = self.work / "volume-a", self.work / "volume-b"
        for v in (first_volume, fresh_volume):
            v.mkdir()
            os.chown(v, 1000, 1000)
            config = self.write_config(name, seeds, storage, v)  # the same config on both: a user's own copy
        pool_env = json.loads((self.work / "docker-pool.json").read_text())["variables"]["properties"]["env"]["default"]
        job = {"env": {**pool_env, **self.s3_env}}
        teacher_before = sum(self.api.stats.successes.values())
        flow_run = self.run(name, config, {**job, "runs_volume": str(first_volume)})
        state = self.wait(flow_run, 1200, until=lambda: sum(self.api.stats.successes.values()) >= teacher_before + 6)
        check(state not in TERMINAL, f"the third run ended {state} before the teacher had answered")
        container = self.container_of(flow_run)
        subprocess.run(["docker", "stop", "--time", "5", container], check=True, capture_output=True)
        before = dict(self.api.stats.answered)
        say(f"stopped container {container[:12]} while the teacher answered "
            f"({sum(self.api.stats.successes.values()) - teacher_before} answers)")
        check(self.wait(flow_run, 120) in ("CRASHED", "FAILED"), "the stopped run did not end")
        resumed = self.run(name, config, {**job, "runs_volume": str(fresh_volume)})
        t1 = time.monotonic()
        state = self.wait(resumed, 1200)
        check(state == "COMPLETED", f"the run resumed on a fresh volume ended {state}")
        again = sum(1 for fp, n in self.api.stats.answered.items() if n > before.get(fp, 0) and before.get(fp, 0) > 0)
        say(f"resumed on a fresh volume, Completed in {time.monotonic() - t1:.0f} s; requests answered before the "
            f"stop and again after it: {again} (bound: 4 in flight)")
        check(again <= 4, f"{again} finished requests were sent again")
        left = [p.name for p in fresh_volume.iterdir() if p.name not in (f"{name}.yaml", f"{name}-seeds.jsonl",
                                                                          "checkpoints")]
        check(not left, f"the run kept files on its fresh volume besides its checkpoints: {left}")
        return again

    def cleanup(self, failed: bool) -> None:
        out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.prefect.work-pool-name={POOL}"],
                             capture_output=True, text=True).stdout.split()
        for cid in out:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        for p in reversed(self.procs):
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
                if p.poll() is not None:
                    break
                try:
                    os.killpg(p.pid, sig)
                    p.wait(15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        if self.api is not None:
            self.api.stop()
        if self.s3 is not None:
            self.s3.stop()
        if self.postgres is not None:
            self.postgres.stop()
        subprocess.run(["docker", "volume", "rm", "-f", self.volume], capture_output=True)
        if self.keep or failed:
            say(f"kept {self.work} (logs, the runs folder)")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        say("stopped the worker, the server and the API; removed containers, the cache volume and the work folder")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, runs) for a look afterwards")
    args = ap.parse_args()
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        print("docker-check: no Docker daemon answers (start it: nohup dockerd > dockerd.log 2>&1 &)", file=sys.stderr)
        return 2
    try:
        import prefect_docker  # noqa: F401
    except ImportError:
        print("docker-check: prefect-docker is missing (make docker-check installs it)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lion-docker-check-"))
    os.chmod(work, 0o755)
    chk = Check(work, args.keep)
    failed = True
    try:
        chk.main()
        failed = False
        return 0
    except CheckFailed as e:
        print(f"docker-check FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        chk.cleanup(failed)


if __name__ == "__main__":
    sys.exit(main())
