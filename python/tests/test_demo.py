"""The demo runs from the README command, stops by itself and reports what it spared."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from typing import List, Tuple


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "circuit_breaker", *args], capture_output=True, text=True, timeout=60
    )


def test_demo_runs_and_spares_the_failing_service() -> None:
    result = run("demo", "--duration", "3", "--rate", "50", "--recovery", "0.5")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "flaky service on http://127.0.0.1:" in out
    assert "Summary" in out and "\x1b[" not in out, "plain output when not a terminal"
    spared = re.search(r"spared the failing endpoints (\d+) of the (\d+) calls", out)
    assert spared is not None, out
    assert 0 < int(spared.group(1)) < int(spared.group(2))
    healthy = re.search(r"price_history\s+(\d+) calls:\s+(\d+) sent,\s+0 spared", out)
    assert healthy is not None and healthy.group(1) == healthy.group(2), out
    # Four callers on the slow endpoint: past max_concurrent_calls the extra ones are turned away.
    slow = re.search(r"options_chain\s+\d+ calls:.*\((\d+) full\)", out)
    assert slow is not None and int(slow.group(1)) > 0, out
    assert result.stderr == ""
    assert max(len(line) for line in out.splitlines()) <= 80


ROW = re.compile(r"^(\w+)\s+(?:CLOSED|OPEN|HALF_OPEN)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+$")
SUMMARY = re.compile(r"^  (\w+)\s+(\d+) calls:\s+(\d+) sent,\s+(\d+) spared \((\d+) full\),\s+(\d+) fallbacks$")


def last_frame_and_summary(out: str) -> Tuple[List[Tuple[str, ...]], List[Tuple[str, ...]]]:
    before, after = out.rsplit("Summary", 1)
    rows = [m.groups() for m in map(ROW.match, before.splitlines()) if m]
    last = rows[-3:]  # one row per endpoint in the final frame
    summary = [m.groups() for m in map(SUMMARY.match, after.splitlines()) if m]
    # frame: name, sent, failed, spared, full, busy; summary: name, calls, sent, spared, full, fallbacks
    return [(n, sent, spared, full) for n, sent, _, spared, full, _ in last], [
        (n, sent, spared, full) for n, _, sent, spared, full, _ in summary
    ]


def test_the_last_frame_and_the_summary_agree() -> None:
    out = run("demo", "--duration", "3", "--rate", "50", "--recovery", "0.5").stdout
    frame, summary = last_frame_and_summary(out)
    assert len(summary) == 3 and frame == summary, out


def live_demo(*args: str) -> Tuple["subprocess.Popen[bytes]", int]:
    """The demo with a terminal as its output (live, coloured, redrawn in place), 80 columns."""
    controller, terminal = pty.openpty()
    env = dict(os.environ, TERM="xterm", COLUMNS="80", LINES="24")
    child = subprocess.Popen(
        [sys.executable, "-m", "circuit_breaker", "demo", *args], stdout=terminal, stderr=terminal, env=env
    )
    os.close(terminal)
    return child, controller


def read_all(controller: int, child: "subprocess.Popen[bytes]", until: float) -> str:
    chunks = []
    while time.monotonic() < until:
        ready, _, _ = select.select([controller], [], [], 0.1)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif child.poll() is not None:
            break
    return b"".join(chunks).decode("utf-8", "replace")


def visible_lines(raw: str) -> List[str]:
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw)
    return [line for chunk in text.split("\r\n") for line in chunk.split("\n")]


def test_the_live_view_fits_an_80_column_terminal() -> None:
    child, controller = live_demo("--duration", "2", "--rate", "30", "--recovery", "0.5")
    try:
        out = read_all(controller, child, time.monotonic() + 30)
        assert child.wait(timeout=10) == 0
    finally:
        os.close(controller)
        if child.poll() is None:
            child.kill()
    assert "\x1b[" in out, "a terminal gets the live, coloured view"
    lines = visible_lines(out)
    assert "Summary" in lines
    too_wide = [line for line in lines if len(line) > 80]
    assert not too_wide, too_wide[:3]
    assert any(line.strip().startswith("0") and line.rstrip().endswith("2s") for line in lines), "a time scale"


def test_ctrl_c_stops_cleanly_with_130_and_a_summary() -> None:
    child, controller = live_demo("--duration", "30", "--rate", "30", "--recovery", "0.5")
    try:
        started = read_all(controller, child, time.monotonic() + 1.5)
        assert "timeline" in started, started
        child.send_signal(signal.SIGINT)
        out = read_all(controller, child, time.monotonic() + 15)
        code = child.wait(timeout=10)
    finally:
        os.close(controller)
        if child.poll() is None:
            child.kill()
    lines = visible_lines(out)
    assert code == 130, out
    assert any(line.startswith("interrupted after") for line in lines), out
    assert "Summary" in lines and any("spared the failing endpoints" in line for line in lines), out
    assert "Traceback" not in out


def test_help_and_bad_arguments() -> None:
    help_ = run("demo", "--help")
    assert help_.returncode == 0
    for option in ("--duration", "--rate", "--recovery", "--plain"):
        assert option in help_.stdout
    assert run("demo", "--duration", "600").returncode == 2
    assert run("nonsense").returncode == 2
    assert run().returncode == 2
