"""``python -m circuit_breaker demo``: watch circuit breakers protect callers from a flaky service.

Starts a small HTTP service on 127.0.0.1 whose endpoints fail on a schedule, sends traffic to it
through registry breakers (with cached fallbacks), shows live what every breaker does, and ends
with how many calls the breakers spared the failing service. Uses only the standard library;
stops by itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from ._breaker import CircuitBreaker
from ._registry import CircuitBreakerRegistry
from ._types import CircuitBreakerOpenError

# Each endpoint's outage, as fractions of the run: (start, end, kind).
OUTAGES: Dict[str, List[Tuple[float, float, str]]] = {
    "current_price": [(0.20, 0.55, "error")],
    "options_chain": [(0.35, 0.80, "slow")],
    "price_history": [],
}

GREEN, YELLOW, RED, DIM, BOLD, RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[2m", "\x1b[1m", "\x1b[0m"
STATE_COLOR = {"CLOSED": GREEN, "HALF_OPEN": YELLOW, "OPEN": RED}
STATE_MARK = {"CLOSED": "▁", "HALF_OPEN": "▄", "OPEN": "█"}


class FlakyService:
    """An HTTP service on 127.0.0.1 whose endpoints fail on the OUTAGES schedule."""

    def __init__(self, duration: float, slow_seconds: float) -> None:
        self.started = time.monotonic()
        self.duration = duration
        self.hits: Dict[str, int] = {name: 0 for name in OUTAGES}
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.strip("/")
                if name not in OUTAGES:
                    self.send_error(404)
                    return
                with service.lock:
                    service.hits[name] += 1
                kind = service.outage(name)
                if kind == "slow":
                    time.sleep(slow_seconds)
                code = 503 if kind == "error" else 200
                body = b"{}"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A caller that timed out on the slow endpoint has hung up: that is the demo.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def outage(self, name: str) -> Optional[str]:
        progress = (time.monotonic() - self.started) / self.duration
        for start, end, kind in OUTAGES[name]:
            if start <= progress < end:
                return kind
        return None

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Tally:
    attempted: int = 0
    ok: int = 0
    failed: int = 0
    rejected: int = 0
    fallbacks: int = 0
    timeline: List[str] = field(default_factory=list)


def drive(
    name: str, breaker: CircuitBreaker, url: str, tally: Tally, stop: threading.Event, interval: float, timeout: float
) -> None:
    """Sends requests to one endpoint until ``stop``, through ``breaker``, falling back to a
    cached answer when it rejects or the request fails."""

    def fetch() -> int:
        with urllib.request.urlopen(f"{url}/{name}", timeout=timeout) as response:
            return int(response.status)

    while not stop.is_set():
        tally.attempted += 1
        try:
            breaker.call(fetch)
            tally.ok += 1
        except CircuitBreakerOpenError:
            tally.rejected += 1
            tally.fallbacks += 1
        except (urllib.error.URLError, OSError):
            tally.failed += 1
            tally.fallbacks += 1
        stop.wait(interval)


def render(
    breakers: Dict[str, CircuitBreaker], tallies: Dict[str, Tally], elapsed: float, duration: float, color: bool
) -> List[str]:
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if color else text

    width = 30
    done = min(1.0, elapsed / duration)
    bar = "█" * int(done * width) + "░" * (width - int(done * width))
    lines = [
        paint("circuit_breaker demo", BOLD) + f"  {bar} {elapsed:4.1f}/{duration:.0f} s",
        "",
        f"{'breaker':<15} {'state':<10} {'sent':>5} {'ok':>5} {'failed':>6} {'spared':>6} {'fallback':>8}  timeline",
    ]
    for name, breaker in breakers.items():
        state = breaker.get_state().value
        t = tallies[name]
        sent = t.ok + t.failed
        timeline = "".join(paint(STATE_MARK[s], STATE_COLOR[s]) if color else STATE_MARK[s] for s in t.timeline[-40:])
        lines.append(
            f"{name:<15} {paint(f'{state:<10}', STATE_COLOR[state])} {sent:>5} {t.ok:>5} {t.failed:>6} "
            f"{t.rejected:>6} {t.fallbacks:>8}  {timeline}"
        )
    lines.append("")
    lines.append(paint("▁ closed  ▄ half-open  █ open   spared = rejected at once, never sent", DIM))
    return lines


def demo(argv: Sequence[str], out: TextIO) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m circuit_breaker demo",
        description=(
            "Start a flaky HTTP service on 127.0.0.1, send traffic to it through circuit breakers, "
            "and show live what the breakers do: state, calls sent, failures, calls spared and "
            "fallbacks served. current_price answers 503s for a while, options_chain becomes slow "
            "(timeouts), price_history stays healthy. Stops by itself."
        ),
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to run, 2-55 (default 20)")
    parser.add_argument(
        "--rate", type=float, default=40.0, help="requests per second per endpoint, 1-200 (default 40)"
    )
    parser.add_argument(
        "--recovery", type=float, default=1.5, help="recovery timeout of the demo breakers in seconds (default 1.5)"
    )
    parser.add_argument(
        "--plain", action="store_true", help="no colours or in-place updates (the default when not a terminal)"
    )
    args = parser.parse_args(argv)
    if not 2 <= args.duration <= 55:
        parser.error("--duration must be between 2 and 55 seconds")
    if not 1 <= args.rate <= 200:
        parser.error("--rate must be between 1 and 200")
    if not 0 < args.recovery <= args.duration:
        parser.error("--recovery must be positive and at most --duration")

    live = not args.plain and out.isatty() and os.environ.get("TERM") != "dumb"
    logging.getLogger("circuit_breaker").setLevel(logging.CRITICAL)  # the table shows transitions
    registry = CircuitBreakerRegistry()
    breakers = {
        name: registry.get_or_create(f"demo:{name}", failure_threshold=3, recovery_timeout_seconds=args.recovery)
        for name in OUTAGES
    }
    for b in breakers.values():
        b.reset()
    tallies = {name: Tally() for name in OUTAGES}
    service = FlakyService(args.duration, slow_seconds=0.5)
    stop = threading.Event()
    workers = [
        threading.Thread(
            target=drive,
            args=(name, breakers[name], service.url, tallies[name], stop, 1.0 / args.rate, 0.2),
            daemon=True,
        )
        for name in OUTAGES
    ]
    out.write(f"flaky service on {service.url}; {len(workers)} endpoints, {args.rate:g} req/s each\n\n")
    started = time.monotonic()
    for w in workers:
        w.start()
    drawn = 0
    next_plain = 0.0
    try:
        while (elapsed := time.monotonic() - started) < args.duration:
            for name, b in breakers.items():
                tallies[name].timeline.append(b.get_state().value)
            lines = render(breakers, tallies, elapsed, args.duration, color=live)
            if live:
                if drawn:
                    out.write(f"\x1b[{drawn}F")
                out.write("".join(f"\x1b[2K{line}\n" for line in lines))
                drawn = len(lines)
            elif elapsed >= next_plain:
                out.write("\n".join(lines[2:-2]) + "\n\n")
                next_plain += max(2.0, args.duration / 5)
            out.flush()
            time.sleep(0.1)
    except KeyboardInterrupt:
        out.write("\ninterrupted\n")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=2)
        service.close()

    flaky = [name for name in OUTAGES if OUTAGES[name]]
    attempted = sum(tallies[name].attempted for name in flaky)
    spared = sum(tallies[name].rejected for name in flaky)
    out.write("\nSummary\n")
    for name, t in tallies.items():
        served = service.hits[name]
        out.write(
            f"  {name:<15} {t.attempted:>5} calls: {served:>5} reached the service, "
            f"{t.rejected:>5} spared by the breaker, {t.fallbacks:>5} answered from the fallback\n"
        )
    share = 100.0 * spared / attempted if attempted else 0.0
    out.write(
        f"\nThe breakers spared the failing endpoints {spared} of the {attempted} calls made to them "
        f"({share:.0f}%): each was answered at once from the fallback instead of waiting on a dead endpoint.\n"
    )
    for b in breakers.values():
        registry.unregister(b.name)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m circuit_breaker demo [--help] [options]\n\n"
              "commands:\n  demo    watch circuit breakers protect callers from a flaky local service")
        return 0 if argv else 2
    if argv[0] != "demo":
        print(f"unknown command {argv[0]!r}; try: python -m circuit_breaker demo --help", file=sys.stderr)
        return 2
    return demo(argv[1:], sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
