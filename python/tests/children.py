"""What the multi-process tests share: collecting a child process's one ``REPORT {json}`` line
(the children print it through their preamble's ``report(**values)``)."""

from __future__ import annotations

import json
import subprocess
from typing import Any, Dict


def finish(child: "subprocess.Popen[str]", timeout: float = 60) -> Dict[str, Any]:
    """Waits for `child` (killing it past `timeout`), checks it exited 0, and returns its report."""
    try:
        out, err = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, f"child failed ({child.returncode}):\n{err}"
    reports = [json.loads(line[len("REPORT ") :]) for line in out.splitlines() if line.startswith("REPORT ")]
    assert len(reports) == 1, out + err
    report: Dict[str, Any] = reports[0]
    return report


def opens(report: Dict[str, Any]) -> int:
    """How many OPEN transitions the child logged."""
    return sum(1 for _, message in report["records"] if "transitioning to OPEN" in message)
