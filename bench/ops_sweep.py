"""Benchmark of the ops session (issue 13): wall time per cell of a sweep, and what one process per test costs.

    python3 bench/ops_sweep.py RESULTS_DIR [--json bench/ops_sweep.json]

RESULTS_DIR is an ops session's results directory (`nox -s ops`, `python -m mnnrepro ops run`). Per cell: the
sweep's wall time (summary.json), the tests' process time (result.json) and the time inside the tests' own run()
(the `test` event's ms); their difference is what a process per test adds (start, plugin load, device creation)
against one process running the whole selection. Timed-out tests are left out of the overhead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def cell_costs(results: Path) -> list[dict[str, Any]]:
    summary = json.loads((results / "summary.json").read_text())
    rows = []
    for cell in summary["cells"]:
        process = inside = 0.0
        n = 0
        for test in cell["tests"]:
            d = results / cell["cell"].replace("/", "__") / test["test"].replace("/", "__")
            if not (d / "result.json").is_file():
                continue
            res = json.loads((d / "result.json").read_text())
            ms = next(
                (
                    e["ms"]
                    for e in map(json.loads, (d / "events.jsonl").read_text().splitlines())
                    if e.get("event") == "test"
                ),
                None,
            )
            if res["timed_out"] or ms is None:
                continue
            n += 1
            process += res["duration_s"]
            inside += ms / 1000
        rows.append(
            {
                "cell": cell["cell"],
                "device": cell.get("device", ""),
                "tests_run": sum(t["status"] != "SKIP" for t in cell["tests"]),
                "wall_s": cell["seconds"],
                "process_s": round(process, 1),
                "inside_tests_s": round(inside, 1),
                "per_process_overhead_ms": round(1000 * (process - inside) / n, 1) if n else None,
                "overhead_share_of_process_time": round((process - inside) / process, 3) if process else None,
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    summary = json.loads((args.results / "summary.json").read_text())
    out = {
        "results": args.results.name,
        "ref": summary["ref"],
        "runner": summary["runner"],
        "jobs": summary["jobs"],
        "timeout_s": summary["timeout_s"],
        "selection": summary["selection"],
        "cells": cell_costs(args.results),
    }
    for row in out["cells"]:
        print(
            f"{row['cell']:32} {row['tests_run']:4} tests  {row['wall_s']:7.1f} s wall  "
            f"per-process overhead {row['per_process_overhead_ms']} ms ({row['overhead_share_of_process_time']})"
        )
    if args.json:
        existing = json.loads(args.json.read_text()) if args.json.is_file() else []
        args.json.write_text(json.dumps([*existing, out], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
