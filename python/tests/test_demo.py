"""The demo runs from the README command, stops by itself and reports what it spared."""

from __future__ import annotations

import re
import subprocess
import sys


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
    healthy = re.search(r"price_history\s+(\d+) calls:\s+(\d+) reached the service,\s+0 spared", out)
    assert healthy is not None, out
    assert result.stderr == ""


def test_help_and_bad_arguments() -> None:
    help_ = run("demo", "--help")
    assert help_.returncode == 0
    for option in ("--duration", "--rate", "--recovery", "--plain"):
        assert option in help_.stdout
    assert run("demo", "--duration", "600").returncode == 2
    assert run("nonsense").returncode == 2
    assert run().returncode == 2
