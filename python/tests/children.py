"""What the multi-process tests share: the start of every child's script (``PREAMBLE``),
releasing children at once, and collecting the child's one ``REPORT {json}`` line that its
``report(**values)`` prints."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

# Every child starts with this: log records on `circuit_breaker` are collected; `report(**values)`
# prints the values with them as one JSON line; `wait_for_go()` waits for the file named by
# CB_TEST_GO, so that the test can start several children at once.
PREAMBLE = textwrap.dedent(
    """
    import json, logging, os, sys, time
    from pathlib import Path
    from circuit_breaker import *
    records = []
    class Collect(logging.Handler):
        def emit(self, record):
            records.append([record.levelname, record.getMessage()])
    logging.getLogger("circuit_breaker").addHandler(Collect())
    logging.getLogger("circuit_breaker").setLevel(logging.INFO)
    def wait_for_go():
        go = Path(os.environ["CB_TEST_GO"])
        deadline = time.monotonic() + 30
        while not go.exists():
            assert time.monotonic() < deadline, "never told to go"
            time.sleep(0.001)
    def report(**values):
        values["records"] = records
        print("REPORT " + json.dumps(values), flush=True)
    class Boom(Exception):
        pass
    def boom():
        raise Boom("down")
    """
)


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


def release_together(children: "List[subprocess.Popen[str]]", go: Path, settle: float) -> List[Dict[str, Any]]:
    """Gives `children` `settle` seconds to attach, tells them all to go at once (they wait in
    `wait_for_go()` for the file `go`), and returns their reports. Every child is killed if a
    report is not collected."""
    try:
        time.sleep(settle)
        go.write_text("go")
        return [finish(c) for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()


def opens(report: Dict[str, Any]) -> int:
    """How many OPEN transitions the child logged."""
    return sum(1 for _, message in report["records"] if "transitioning to OPEN" in message)
