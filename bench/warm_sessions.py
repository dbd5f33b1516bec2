#!/usr/bin/env python3
"""Warm sessions, before and after, on this machine in one run; and where a warm session's seconds go.

For each runner and session (default: host and docker; vulkan_image and vulkan_buffer), the README's way of
running it, `nox -s SESSION -- --runner R`, is timed as a whole process in two clean clones: BEFORE (a commit,
default 9131d22, the start of the one-pipeline issue) and AFTER (HEAD). Both share this machine's cache
(~/.cache/mnnrepro), so builds are warm for both; each (clone, runner, session) runs once unmeasured first (its
nox environment, a build its code keys differently), then --rounds times, BEFORE and AFTER in turn, so a drift
of the machine's speed falls on both. Reported: the median and range of each, their ratio per round, the
verdicts (every run must end with every cell matching its expectation), and for AFTER the profile of its median
run, read from the files the session wrote (summary.json's seconds, each cell's cell.json and events.jsonl):

  start        nox, its environment check, the interpreter and imports, and the reports (wall - session)
  checks       settings, fixture and golden manifests, preflight
  build check  runner, image and build cache lookups (nothing is built warm)
  gdb probe    gdb as the runner sees it
  per cell     harness overhead (process or container start, gdb start and symbol loading, exit: the cell's
               wall time minus the driver's own clock), backend and ICD start (load_plugin, probe_device,
               configure_executor), data and model, training steps (forward + sgd_step), gradient dumps
               (grad_dump), test evaluation, judging (checks, gradient comparison)

Usage: python3 bench/warm_sessions.py [--before REV] [--runners host,docker] [--sessions ...] [--rounds N]
Writes bench/warm_sessions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DRIVER_START = ("load_plugin", "probe_device", "configure_executor")
STEPS = ("forward", "sgd_step")


def clone(rev: str, dest: Path) -> Path:
    if not (dest / ".git").is_dir():
        subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", "--detach", rev], check=True)
    return dest


def run(checkout: Path, session: str, runner: str, log: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "nox", "-s", session, "--", "--runner", runner]
    start = time.monotonic()
    with open(log, "a") as out:
        out.write(f"\n=== {checkout.name} {session} {runner}\n")
        out.flush()
        rc = subprocess.run(argv, cwd=checkout, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - start
    latest = (checkout / "results" / "latest").resolve()
    summary = json.loads((latest / "summary.json").read_text()) if (latest / "summary.json").is_file() else {}
    return {"rc": rc, "wall_s": round(wall, 2), "results": str(latest), "all_matched": summary.get("all_matched")}


def stage_seconds(events: Path) -> dict[str, float]:
    """Seconds per stage name, from the driver's own clock (each stage lasts until the next event's stage)."""
    lines = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    stages = [e for e in lines if e.get("event") == "stage"]
    end = lines[-1]["t"] if lines else 0.0
    out: dict[str, float] = {}
    for a, b in zip(stages, [*stages[1:], {"t": end}], strict=True):
        out[a["name"]] = out.get(a["name"], 0.0) + float(b["t"]) - float(a["t"])
    out["driver_total"] = float(end)
    return out


def profile(result: dict[str, Any]) -> dict[str, float]:
    """Where one session's seconds went (see the module's docstring)."""
    results = Path(result["results"])
    summary = json.loads((results / "summary.json").read_text())
    header = summary["header"]
    ref = next(iter(header.get("refs", {}).values()), header)
    seconds = header.get("seconds") or {}
    prep = ref.get("prepare_seconds") or {}
    rows: dict[str, float] = {
        "start (nox, environment, interpreter, imports) + reports": result["wall_s"]
        - float(seconds.get("until_reports", 0.0)),
        "settings, manifests, preflight": float(seconds.get("checks_and_preflight", 0.0)),
        "runner, image and build cache checks": float(prep.get("build_or_cache_check", 0.0)),
        "gdb probe": float(prep.get("gdb_probe", 0.0)),
    }
    for cell in summary["cells"]:
        name = cell["cell"]
        cell_dir = results / "cells" / name.replace("/", "__")
        spent = (cell.get("evidence") or {}).get("seconds") or {}
        if (cell.get("evidence") or {}).get("reused"):
            rows[f"{name}: reused (copy + re-judge)"] = float(spent.get("run", 0.0)) + float(spent.get("judge", 0.0))
            continue
        meta = json.loads((cell_dir / "cell.json").read_text())
        st = stage_seconds(cell_dir / "events.jsonl")
        rows[f"{name}: process/container start, gdb, exit"] = float(meta["duration_s"]) - st["driver_total"]
        rows[f"{name}: backend + ICD start"] = sum(st.get(k, 0.0) for k in DRIVER_START)
        rows[f"{name}: data + model"] = st.get("load_data", 0.0) + st.get("build_model", 0.0)
        rows[f"{name}: training steps"] = sum(st.get(k, 0.0) for k in STEPS)
        rows[f"{name}: gradient dumps"] = st.get("grad_dump", 0.0)
        rows[f"{name}: test evaluation"] = st.get("test", 0.0)
        rows[f"{name}: judging"] = float(spent.get("judge", 0.0))
    return {k: round(v, 2) for k, v in rows.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", default="9131d22")
    p.add_argument("--after", default="HEAD")
    p.add_argument("--runners", default="host,docker")
    p.add_argument("--sessions", default="vulkan_image,vulkan_buffer")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--work", default="/tmp/mnnrepro-warm")
    p.add_argument("--out", default=str(ROOT / "bench" / "warm_sessions.json"))
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    after_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.after], text=True, capture_output=True)
    clones = {
        "before": clone(args.before, work / "before"),
        "after": clone(after_rev.stdout.strip(), work / "after"),
    }
    log = work / "log.txt"
    runs: dict[str, list[dict[str, Any]]] = {}
    for runner in args.runners.split(","):
        for session in args.sessions.split(","):
            for checkout in clones.values():  # unmeasured: nox environments, anything keyed anew
                run(checkout, session, runner, log)
            for _ in range(args.rounds):
                for side, checkout in clones.items():
                    runs.setdefault(f"{runner}/{session}/{side}", []).append(run(checkout, session, runner, log))
                    print(runner, session, side, runs[f"{runner}/{session}/{side}"][-1], flush=True)
    table = []
    for runner in args.runners.split(","):
        for session in args.sessions.split(","):
            b, a = runs[f"{runner}/{session}/before"], runs[f"{runner}/{session}/after"]
            ratios = [x["wall_s"] / y["wall_s"] for x, y in zip(b, a, strict=True)]
            median_after = sorted(a, key=lambda r: r["wall_s"])[len(a) // 2]
            table.append(
                {
                    "runner": runner,
                    "session": session,
                    "before_s": [r["wall_s"] for r in b],
                    "after_s": [r["wall_s"] for r in a],
                    "before_median_s": statistics.median(r["wall_s"] for r in b),
                    "after_median_s": statistics.median(r["wall_s"] for r in a),
                    "before_over_after": [round(r, 2) for r in ratios],
                    "all_matched": all(r["all_matched"] and r["rc"] == 0 for r in (*b, *a)),
                    "after_profile": profile(median_after),
                }
            )
    meta = {
        "before": subprocess.run(
            ["git", "-C", str(clones["before"]), "rev-parse", "--short", "HEAD"], text=True, capture_output=True
        ).stdout.strip(),
        "after": subprocess.run(
            ["git", "-C", str(clones["after"]), "rev-parse", "--short", "HEAD"], text=True, capture_output=True
        ).stdout.strip(),
        "cpus": os.cpu_count(),
        "load_after": os.getloadavg(),
        "rounds": args.rounds,
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "table": table}, indent=1) + "\n")
    print(f"\nbefore {meta['before']}, after {meta['after']}, {meta['cpus']} CPUs, {args.rounds} rounds")
    print("| runner | session | before median s | after median s | before/after per round | verdicts |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in table:
        print(
            f"| {row['runner']} | {row['session']} | {row['before_median_s']:.1f} ({min(row['before_s']):.1f}-"
            f"{max(row['before_s']):.1f}) | {row['after_median_s']:.1f} ({min(row['after_s']):.1f}-"
            f"{max(row['after_s']):.1f}) | {', '.join(map(str, row['before_over_after']))} | "
            f"{'all matched' if row['all_matched'] else 'MISMATCH'} |"
        )
    for row in table:
        print(f"\nprofile, after, {row['runner']} {row['session']} (median run):")
        for k, v in row["after_profile"].items():
            print(f"  {v:8.2f} s  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
