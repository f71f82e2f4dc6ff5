"""Issue 22's table: what a hung dependency does to a FastAPI service, without and with
`max_concurrent_calls`.

The app is `python/tests/apps/hung_app.py` (the one `python/tests/test_hung_dependency.py` runs),
under real `uvicorn --workers 4` with `CIRCUIT_BREAKER_SHARED_MEMORY=<tmp>/region`, in front of
an upstream (in this process) that accepts every connection and never answers within the app's
4 s client timeout. For `requests` in a sync endpoint and `httpx.AsyncClient` in an async one,
without a limit and with `CB_LIMIT=8`, it sends 100 requests/s to the upstream endpoint for 10 s
while probing `/local` (a sync endpoint that needs no upstream) 20 times a second, each request
on a connection of its own with a 10 s client timeout, and prints a Markdown table:

- upstream calls in flight at once (peak): connections the upstream held at once;
- local endpoint p99: `/local` latency (an unanswered request counts as its 10 s timeout, and
  the unanswered ones are counted beside it);
- rejections (503) p99: latency of the upstream endpoint's 503 answers;
- requests answered: upstream-endpoint requests answered (any status) within 10 s, of those sent.

A configuration the installed `circuit_breaker` cannot run (say `CB_LIMIT` before
`max_concurrent_calls` exists) gets a row saying why.

    python benches/python/hung_dependency.py [--seconds 10] [--rate 100] [--server uvicorn]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python" / "tests" / "apps"))
import hung_load as h  # noqa: E402

CLIENTS = [("/sync", "`requests` in a sync endpoint (thread pool)"), ("/async", "`httpx.AsyncClient` in an async endpoint")]


def ms(value: float) -> str:
    return "no 503" if math.isnan(value) else f"{value:,.0f}"


def run(server_kind: str, path: str, limit: Optional[int], args: argparse.Namespace) -> List[str]:
    upstream = h.HangingUpstream()
    try:
        with tempfile.TemporaryDirectory(prefix="hung-dependency-") as tmp:
            server = h.Server(server_kind, Path(tmp), upstream.url, limit)
            problem = server.app_problem()
            if problem is not None:
                return ["n/a", "n/a", "n/a", f"the app did not start: {problem}"]
            server.start()
            try:
                server.wait_until_up()
                load = h.Load(server.port, {path: args.rate, "/local": args.local_rate}, args.seconds, args.client_timeout)
                samples = load.run()
            finally:
                server.kill()
    finally:
        upstream.close()
    _, peak, _ = upstream.snapshot()
    calls, local = h.summarize(samples, path), h.summarize(samples, "/local")
    print(f"  {path} limit={limit}: {calls.codes}; /local {local.codes}", file=sys.stderr)
    local_p99 = ms(local.p99_ms)
    if local.answered < local.sent:
        local_p99 += f" ({local.sent - local.answered} of {local.sent} unanswered)"
    return [str(peak), local_p99, ms(calls.rejection_p99_ms), f"{calls.answered} of {calls.sent}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per row (default 10)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s to the upstream endpoint (default 100)")
    parser.add_argument("--local-rate", type=float, default=20.0, help="requests/s to /local (default 20)")
    parser.add_argument("--client-timeout", type=float, default=10.0, help="the load's timeout per request (default 10 s)")
    parser.add_argument("--limit", type=int, default=8, help="CB_LIMIT of the limited rows (default 8)")
    parser.add_argument("--server", choices=["uvicorn", "gunicorn"], default="uvicorn")
    args = parser.parse_args()
    h.raise_fd_limit()

    header = ["client", "limit", "upstream calls in flight at once (peak)", "local endpoint p99 (ms)", "rejections (503) p99 (ms)", "requests answered"]
    rows = []
    began = time.monotonic()
    for path, client in CLIENTS:
        for limit in (None, args.limit):
            print(f"{client}, limit {limit or 'none'} ...", file=sys.stderr)
            rows.append([client, str(limit or "none")] + run(args.server, path, limit, args))
    print(
        f"\n`{args.server} --workers 4`, `CIRCUIT_BREAKER_SHARED_MEMORY`, {args.rate:g} requests/s for {args.seconds:g} s "
        f"(+ `/local` at {args.local_rate:g}/s), upstream hanging, 4 s upstream timeout, {args.client_timeout:g} s client timeout "
        f"({time.monotonic() - began:.0f} s in all):\n"
    )
    print("| " + " | ".join(header) + " |")
    print("|---|---|" + "---:|" * (len(header) - 2))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
