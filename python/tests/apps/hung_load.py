"""What `test_hung_dependency.py` and `benches/python/hung_dependency.py` share: a hanging upstream,
the app (`hung_app.py`) under real `uvicorn --workers 4` or gunicorn, and an open-loop load.

Standard library only (no pytest), so the benchmark runs without the test tools.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

APPS = Path(__file__).resolve().parent
APP = APPS / "hung_app.py"
# The app's breaker settings (checked against hung_app.py by the test), for reading its status.
THRESHOLD, RECOVERY = 100_000, 5
UPSTREAM_TIMEOUT = 4.0


def raise_fd_limit() -> None:
    """A run without a limit holds a thousand sockets at once in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


class HangingUpstream:
    """A dependency on 127.0.0.1 that accepts every connection and never answers within the
    client's timeout: it holds each connection until the client gives up (closes) or, after
    `answer_after` seconds, answers 200 and closes.

    `in_flight` counts the connections held now, `peak` the most at once, `accepted` every
    connection ever (with `accept_times`, monotonic). One thread runs a selector loop: in each
    round it counts out the connections their clients closed *before* it counts in new ones, and
    it looks once more for closed ones right before each accept. A client that gives up closes its
    socket before its breaker slot is free, so before the next call can connect: counted in this
    order, a new call never overlaps the one it replaced (a thread per connection could count the
    new one before noticing the old one's close, and see 9 where there were 8).
    """

    def __init__(self, answer_after: float = 10.0) -> None:
        self.answer_after = answer_after
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.accepted = 0
        self.accept_times: List[float] = []
        self._held: Dict[socket.socket, float] = {}  # socket -> when to answer
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4096)
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._stopping = False
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._run, name="hanging-upstream", daemon=True)
        self._thread.start()

    def snapshot(self) -> Tuple[int, int, int]:
        with self.lock:
            return self.in_flight, self.peak, self.accepted

    def reset_peak(self) -> None:
        with self.lock:
            self.peak = self.in_flight

    def accepted_since(self, t: float) -> int:
        with self.lock:
            return sum(1 for a in self.accept_times if a >= t)

    def _release(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        del self._held[conn]
        conn.close()
        with self.lock:
            self.in_flight -= 1

    def _reap(self, events: List[Tuple[selectors.SelectorKey, int]]) -> bool:
        """Counts out the held connections whose client closed; True if the listener is ready."""
        listener_ready = False
        for key, _ in events:
            sock = key.fileobj
            if sock is self._listener:
                listener_ready = True
            elif sock is self._wake_r:
                pass
            elif sock in self._held:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # the client gave up
                    self._release(sock)
                # else: the request's bytes, read and ignored: it is never answered in time
        return listener_ready

    def _accept_all(self) -> None:
        while True:
            self._reap(self._selector.select(0))  # closes that raced with this connection first
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            now = time.monotonic()
            self._held[conn] = now + self.answer_after
            self._selector.register(conn, selectors.EVENT_READ)
            with self.lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                self.accepted += 1
                self.accept_times.append(now)

    def _answer_due(self) -> float:
        now = time.monotonic()
        due = [c for c, at in self._held.items() if at <= now]
        for conn in due:
            try:
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except OSError:
                pass
            self._release(conn)
        return min(self._held.values(), default=now + 1.0) - now

    def _run(self) -> None:
        while not self._stopping:
            wait = max(0.0, min(1.0, self._answer_due()))
            if self._reap(self._selector.select(wait)):
                self._accept_all()

    def close(self) -> None:
        self._stopping = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for conn in list(self._held):
            conn.close()
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()


# -- the app under a real server ------------------------------------------------------------------


def children(pid: int) -> Set[int]:
    """The direct children of `pid`, from /proc (psutil is not installed): each thread's
    `children` file, or, on a kernel without them, every process's parent in `/proc/*/stat`."""
    found: Set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    if os.path.exists(f"/proc/{pid}/task/{tasks[0]}/children"):
        for tid in tasks:
            try:
                found.update(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
            except OSError:
                pass
        return found
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:  # the field after the state
                found.add(int(entry))
    return found


def _socket_inodes(pid: int) -> Set[int]:
    inodes: Set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(int(m.group(1)))
    return inodes


def connections_to(pids: Sequence[int], port: int) -> Dict[int, int]:
    """How many established TCP connections to 127.0.0.1:`port` each process holds."""
    established: Set[int] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        remote, state, inode = parts[2], parts[3], int(parts[9])
        if state == "01" and int(remote.split(":")[1], 16) == port:
            established.add(inode)
    held = {pid: len(_socket_inodes(pid) & established) for pid in pids}
    return {pid: n for pid, n in held.items() if n}


class Server:
    """`hung_app:app` under `uvicorn --workers N` or `gunicorn --workers N --worker-class
    uvicorn_worker.UvicornWorker` (the invocations of `test_workers.py`), in a process group of
    its own so that `kill()` takes the master and every worker down whatever state they are in."""

    def __init__(self, kind: str, tmp: Path, upstream_url: str, limit: Optional[int], probe_timeout: Optional[float] = None, workers: int = 4) -> None:
        self.kind, self.workers = kind, workers
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.region = tmp / "region"
        self.log = tmp / f"{kind}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUIT_BREAKER_") and k not in ("CB_LIMIT", "CB_PROBE_TIMEOUT")}
        env.update({"CIRCUIT_BREAKER_SHARED_MEMORY": str(self.region), "UPSTREAM_URL": upstream_url, "PYTHONPATH": str(APPS)})
        if limit is not None:
            env["CB_LIMIT"] = str(limit)
        if probe_timeout is not None:
            env["CB_PROBE_TIMEOUT"] = str(probe_timeout)
        self.env = env
        if kind == "uvicorn":
            argv = [sys.executable, "-m", "uvicorn", "hung_app:app", "--workers", str(workers), "--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        elif kind == "gunicorn":
            argv = [
                sys.executable, "-m", "gunicorn", "hung_app:app", "--workers", str(workers), "--worker-class", "uvicorn_worker.UvicornWorker",
                "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
            ]  # fmt: skip
        else:
            raise ValueError(kind)
        self.argv = argv
        self.process: "Optional[subprocess.Popen[bytes]]" = None

    def app_problem(self) -> Optional[str]:
        """Imports the app once with the server's environment: a breaker it cannot build (say, a
        keyword this version does not know) is reported at once instead of as workers that
        never come up."""
        check = subprocess.run([sys.executable, "-c", "import hung_app"], cwd=APPS, env=self.env, capture_output=True, timeout=60)
        if check.returncode == 0:
            return None
        return check.stderr.decode(errors="replace").strip().splitlines()[-1]

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=APPS, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def worker_pids(self) -> Set[int]:
        assert self.process is not None
        return children(self.process.pid)

    def wait_until_up(self, timeout: float = 45.0) -> Set[int]:
        """Until every worker answers (`/local` names its pid); returns their pids."""
        assert self.process is not None
        seen: Set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}:\n{self.log_tail()}")
            results = asyncio.run(_burst(self.port, "/local", 16, 2.0))
            seen.update(json.loads(body)["pid"] for status, body in results if status == 200)
            if len(seen) >= self.workers:
                return seen
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind}: {len(seen)} of {self.workers} workers answered in {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


# -- load -----------------------------------------------------------------------------------------


async def _get(port: int, path: str, timeout: float) -> Tuple[Optional[int], bytes]:
    """One `GET` on a connection of its own (`Connection: close`), with a raw socket: next to
    nothing of this process's time goes into the client, so latencies are the server's."""

    async def exchange() -> Tuple[Optional[int], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = await reader.read()
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        return (int(m.group(1)) if m else None), body

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except (asyncio.TimeoutError, OSError):
        return None, b""


async def _burst(port: int, path: str, n: int, timeout: float) -> List[Tuple[Optional[int], bytes]]:
    return list(await asyncio.gather(*(_get(port, path, timeout) for _ in range(n))))


@dataclass
class Sample:
    path: str
    start: float  # monotonic
    latency: float  # seconds; the client timeout if unanswered
    status: Optional[int]  # None: no answer within the client timeout (or connection error)
    body: bytes


@dataclass
class Load:
    """Open-loop load in a thread of its own: `rate` requests/s to each path of `rates`, each on a
    new connection, for `seconds` or until `stop()`; then it waits for the answers (at most
    `client_timeout`)."""

    port: int
    rates: Dict[str, float]
    seconds: float
    client_timeout: float = 10.0
    samples: List[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="load", daemon=True)
        self.began = 0.0

    def start(self) -> "Load":
        self.began = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> List[Sample]:
        self._thread.join(timeout=self.seconds + self.client_timeout + 30)
        if self._thread.is_alive():
            raise RuntimeError("the load did not finish: a client timeout did not fire")
        return self.samples

    def run(self) -> List[Sample]:
        return self.start().join()

    async def _one(self, path: str) -> None:
        began = time.monotonic()
        status, body = await _get(self.port, path, self.client_timeout)
        self.samples.append(Sample(path, began, time.monotonic() - began, status, body))

    async def _main(self) -> None:
        schedule = sorted((i / rate, path) for path, rate in self.rates.items() for i in range(int(self.seconds * rate)))
        tasks = []
        t0 = time.monotonic()
        for at, path in schedule:
            if self._stop.is_set():
                break
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(self._one(path)))
        await asyncio.gather(*tasks)


@dataclass
class Summary:
    sent: int
    answered: int
    codes: Dict[Optional[int], int]
    p99_ms: float  # every request of the path, answered or not (an unanswered one counts its timeout)
    rejections: int
    rejection_p99_ms: float


def summarize(samples: Sequence[Sample], path: str) -> Summary:
    mine = [s for s in samples if s.path == path]
    codes: Dict[Optional[int], int] = {}
    for s in mine:
        codes[s.status] = codes.get(s.status, 0) + 1
    rejected = [s.latency for s in mine if s.status == 503]
    return Summary(
        sent=len(mine),
        answered=sum(1 for s in mine if s.status is not None),
        codes=codes,
        p99_ms=percentile([s.latency for s in mine], 99) * 1000,
        rejections=len(rejected),
        rejection_p99_ms=percentile(rejected, 99) * 1000,
    )
