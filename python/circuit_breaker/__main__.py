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
from ._types import CircuitBreakerFullError, CircuitBreakerOpenError

# Concurrent callers per endpoint: the slow one gets several, so that its calls pile up in flight
# until max_concurrent_calls turns the extra ones away at once ("full").
CALLERS = {"current_price": 1, "options_chain": 4, "price_history": 1}
MAX_CONCURRENT_CALLS = 2

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
    full: int = 0
    """Of ``rejected``: turned away because MAX_CONCURRENT_CALLS calls were in flight."""
    fallbacks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # (seconds since the start, state) every tenth of a second
    timeline: List[Tuple[float, str]] = field(default_factory=list)

    @property
    def sent(self) -> int:
        """Calls the breaker let through to the service."""
        return self.ok + self.failed


def drive(
    name: str, breaker: CircuitBreaker, url: str, tally: Tally, stop: threading.Event, interval: float, timeout: float
) -> None:
    """Sends requests to one endpoint until ``stop``, through ``breaker``, falling back to a
    cached answer when it rejects or the request fails."""

    def fetch() -> int:
        with urllib.request.urlopen(f"{url}/{name}", timeout=timeout) as response:
            return int(response.status)

    while not stop.is_set():
        ok = failed = rejected = full = 0
        try:
            breaker.call(fetch)
            ok = 1
        except CircuitBreakerOpenError as error:
            rejected, full = 1, int(isinstance(error, CircuitBreakerFullError))
        except (urllib.error.URLError, OSError):
            failed = 1
        with tally.lock:  # several callers share an endpoint's tally
            tally.attempted += 1
            tally.ok += ok
            tally.failed += failed
            tally.rejected += rejected
            tally.full += full
            tally.fallbacks += failed + rejected
        stop.wait(interval)


WIDTH = 80  # every line fits an 80-column terminal
TIMELINE = 24  # columns of the timeline, each a 24th of the run
SEVERITY = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}


def timeline(samples: List[Tuple[float, str]], duration: float) -> List[Optional[str]]:
    """The worst state seen in each of TIMELINE equal slices of the run (None: not reached)."""
    columns: List[Optional[str]] = [None] * TIMELINE
    for at, state in samples:
        i = min(TIMELINE - 1, int(at / duration * TIMELINE))
        seen = columns[i]
        if seen is None or SEVERITY[state] > SEVERITY[seen]:
            columns[i] = state
    return columns


def ruler(duration: float) -> str:
    """Marks under the timeline: 0 s, the middle and the end."""
    line = [" "] * TIMELINE
    for at, label in ((0, "0"), (TIMELINE // 2, f"{duration / 2:g}"), (TIMELINE - 1, f"{duration:g}s")):
        start = max(0, min(at - (len(label) - 1 if at == TIMELINE - 1 else 0), TIMELINE - len(label)))
        line[start : start + len(label)] = label
    return "".join(line)


def render(
    breakers: Dict[str, CircuitBreaker], tallies: Dict[str, Tally], elapsed: float, duration: float, color: bool
) -> List[str]:
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if color else text

    bar_width = 30
    done = min(1.0, elapsed / duration)
    bar = "█" * int(done * bar_width) + "░" * (bar_width - int(done * bar_width))
    left = f"{'breaker':<13} {'state':<9} {'sent':>5} {'failed':>6} {'spared':>6} {'full':>4} {'busy':>4}"
    lines = [
        paint("circuit_breaker demo", BOLD) + f"  {bar} {min(elapsed, duration):4.1f}/{duration:g} s",
        "",
        f"{left}  timeline",
    ]
    for name, breaker in breakers.items():
        state = breaker.get_state().value
        t = tallies[name]
        marks = "".join(
            " " if s is None else paint(STATE_MARK[s], STATE_COLOR[s]) for s in timeline(t.timeline, duration)
        )
        busy = breaker.get_status()["in_flight"] or 0
        row = f"{name:<13} {paint(f'{state:<9}', STATE_COLOR[state])} {t.sent:>5} {t.failed:>6} {t.rejected:>6} {t.full:>4} {busy:>4}"
        lines.append(f"{row}  {marks}")
    lines.append(" " * (len(left) + 2) + paint(ruler(duration), DIM))
    lines.append(paint("▁ closed ▄ half-open █ open   spared: rejected at once, never sent", DIM))
    lines.append(paint(f"full: spared because {MAX_CONCURRENT_CALLS} calls were in flight   busy: in flight now", DIM))
    return lines


def summary(tallies: Dict[str, Tally], out: TextIO) -> None:
    """What the run did, from the same tallies as the last frame of the table."""
    out.write("\nSummary\n")
    for name, t in tallies.items():
        out.write(
            f"  {name:<13} {t.attempted:>5} calls: {t.sent:>5} sent, {t.rejected:>5} spared ({t.full} full), "
            f"{t.fallbacks:>5} fallbacks\n"
        )
    flaky = [name for name in OUTAGES if OUTAGES[name]]
    attempted = sum(tallies[name].attempted for name in flaky)
    spared = sum(tallies[name].rejected for name in flaky)
    share = 100.0 * spared / attempted if attempted else 0.0
    out.write(
        f"\nThe breakers spared the failing endpoints {spared} of the {attempted} calls\n"
        f"made to them ({share:.0f}%): each was answered at once from the fallback\n"
        "instead of waiting on a dead endpoint.\n"
    )


def demo(argv: Sequence[str], out: TextIO) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m circuit_breaker demo",
        description=(
            "Start a flaky HTTP service on 127.0.0.1, send traffic to it through circuit breakers, "
            "and show live what the breakers do: state, calls sent, failures, calls spared and "
            "fallbacks served. current_price answers 503s for a while, options_chain becomes slow "
            "(timeouts), price_history stays healthy. Stops by itself; Ctrl-C stops it early."
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
        name: registry.get_or_create(
            f"demo:{name}",
            failure_threshold=3,
            recovery_timeout_seconds=args.recovery,
            max_concurrent_calls=MAX_CONCURRENT_CALLS,
        )
        for name in OUTAGES
    }
    for b in breakers.values():
        b.reset()
    tallies = {name: Tally() for name in OUTAGES}
    service = FlakyService(args.duration, slow_seconds=0.5)
    stop = threading.Event()
    # Each endpoint gets `rate` requests per second in all, from CALLERS[name] threads.
    workers = [
        threading.Thread(
            target=drive,
            args=(name, breakers[name], service.url, tallies[name], stop, CALLERS[name] / args.rate, 0.2),
            daemon=True,
        )
        for name in OUTAGES
        for _ in range(CALLERS[name])
    ]
    out.write(f"flaky service on {service.url}; {len(OUTAGES)} endpoints, {args.rate:g} req/s each\n\n")
    started = time.monotonic()
    for w in workers:
        w.start()
    drawn = 0

    def draw(elapsed: float) -> None:
        nonlocal drawn
        lines = render(breakers, tallies, elapsed, args.duration, color=live)
        if live:
            if drawn:
                out.write(f"\x1b[{drawn}F")
            out.write("".join(f"\x1b[2K{line}\n" for line in lines))
            drawn = len(lines)
        else:
            out.write("\n".join(lines[2:]) + "\n\n")
        out.flush()

    next_plain = 0.0
    interrupted = False
    try:
        while (elapsed := time.monotonic() - started) < args.duration:
            for name, b in breakers.items():
                tallies[name].timeline.append((elapsed, b.get_state().value))
            if live:
                draw(elapsed)
            elif elapsed >= next_plain:
                draw(elapsed)
                next_plain += max(2.0, args.duration / 5)
            time.sleep(0.1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=2)
        service.close()
    # The last frame and the summary read the same, final tallies: nothing runs any more.
    elapsed = time.monotonic() - started
    draw(elapsed)
    if interrupted:
        out.write(f"interrupted after {elapsed:.1f} of {args.duration:g} s\n")
    summary(tallies, out)
    for b in breakers.values():
        registry.unregister(b.name)
    return 130 if interrupted else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m circuit_breaker demo [--help] [options]\n\n"
              "commands:\n  demo    watch circuit breakers protect callers from a flaky local service")
        return 0 if argv else 2
    if argv[0] != "demo":
        print(f"unknown command {argv[0]!r}; try: python -m circuit_breaker demo --help", file=sys.stderr)
        return 2
    try:
        return demo(argv[1:], sys.stdout)
    except KeyboardInterrupt:  # before the run started, or while printing its summary
        return 130


if __name__ == "__main__":
    sys.exit(main())
