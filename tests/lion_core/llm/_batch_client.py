"""Run one gateway batch in its own process (the kill -9 test kills this process mid-batch)."""

import sys

from lion_core.config import ApiRole, RateLimits, RetryPolicy
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore

url, store_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = ApiRole(base_url=url, model="m", rate_limits=RateLimits(requests_per_minute=60000, max_concurrency=4),
              retry=RetryPolicy(max_attempts=5, initial_backoff_s=0.05, max_backoff_s=0.2, request_timeout_s=5))
ep = Endpoint(role="teacher", endpoint_id="kill-test", model="m", base_url=url, api_model="m", config=cfg)
gw = Gateway(ep, ResponseStore(store_path))
results = gw.run_sync([ChatRequest.of([("user", f"item {i}")], max_tokens=8) for i in range(n)], "imitation")
print(sum(r.ok for r in results), flush=True)
