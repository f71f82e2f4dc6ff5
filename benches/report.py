"""Turns the criterion results of the last `cargo bench -p benches` into Markdown tables:
median ns per operation, its 95% interval, and ratios against the fastest peer and the floor.

    python benches/report.py [target/criterion]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Tuple

PEERS = ("failsafe", "recloser", "tower-resilience", "tower/ConcurrencyLimit", "tower/tower-resilience-bulkhead")
# The groups in the order they are reported; any other group follows, sorted by name.
ORDER = [
    "open_reject",
    "closed_success",
    "closed_failure",
    "half_open_success",
    "contended_closed_success_2_threads",
    "closed_success_rate_policy",
    "closed_failure_rate_policy",
    "closed_failure_rate_and_consecutive",
    "tower_open_reject",
    "tower_closed_success",
    "future_open_reject",
    "future_closed_success",
    "limit_closed_success",
]
# Groups without peers are measured against a baseline row: (row name, what the rows are,
# ratio column title).
BASELINES = (
    ("in_process", "store", "this ÷ in-process"),
    ("cb_core/call_sync", "variant", "this ÷ sync call"),
    ("cb_core/rates_only", "policies", "this ÷ rates only"),
)


def load(root: Path) -> Dict[str, Dict[str, Tuple[float, float, float]]]:
    groups: Dict[str, Dict[str, Tuple[float, float, float]]] = {}
    for meta in sorted(root.glob("**/new/benchmark.json")):
        info = json.loads(meta.read_text())
        median = json.loads((meta.parent / "estimates.json").read_text())["median"]
        ci = median["confidence_interval"]
        groups.setdefault(info["group_id"], {})[info["function_id"]] = (
            median["point_estimate"],
            ci["lower_bound"],
            ci["upper_bound"],
        )
    return groups


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    groups = load(root)
    floor = groups.pop("floor", {})
    if floor:
        print("### floor\n")
        print("| operation | median ns | 95% interval |")
        print("|---|---:|---|")
        for name, (m, lo, hi) in floor.items():
            print(f"| {name} | {m:.2f} | {lo:.2f} – {hi:.2f} |")
        print()
    for group in ORDER + sorted(set(groups) - set(ORDER)):
        rows = groups.get(group)
        if not rows:
            continue
        print(f"### {group}\n")
        baseline = next((b for b in BASELINES if b[0] in rows), None)
        if baseline:
            # Groups without peers (the shared-memory stores, the future path): each row
            # against the group's baseline row.
            row, what, title = baseline
            base = rows[row][0]
            print(f"| {what} | median ns | 95% interval | {title} |")
            print("|---|---:|---|---:|")
            for name, (m, lo, hi) in sorted(rows.items(), key=lambda kv: kv[1][0]):
                print(f"| {name} | {m:.2f} | {lo:.2f} – {hi:.2f} | {m / base:.2f}x |")
            print()
            continue
        peers = [rows[p][0] for p in PEERS if p in rows]
        best_peer = min(peers) if peers else None
        print("| breaker | median ns | 95% interval | fastest peer ÷ this |")
        print("|---|---:|---|---:|")
        for name, (m, lo, hi) in sorted(rows.items(), key=lambda kv: kv[1][0]):
            ratio = f"{best_peer / m:.1f}x" if best_peer else ""
            print(f"| {name} | {m:.2f} | {lo:.2f} – {hi:.2f} | {ratio} |")
        print()


if __name__ == "__main__":
    main()
