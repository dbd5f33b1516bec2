"""Runs a batch of test processes inside one runner call (``python3 optest_batch.py PLAN.json``); standard library
only, not imported by the harness (like gdb_capture.py it runs where the runner runs: on the host or inside the
container, so a sweep of hundreds of tests costs one container, not hundreds).

PLAN.json: {"jobs": N, "tests": [{"name", "dir", "argv", "env", "timeout_s"}, ...]}. Each test runs in its own
process group with its own time limit, stdout and stderr to DIR/stdout.txt and DIR/stderr.txt, and its outcome
to DIR/result.json ({"returncode", "timed_out", "duration_s"}) written last and atomically: a test without
result.json did not finish (the batch was interrupted), and the harness runs it again. One line per finished test
on stdout ("[DONE/TOTAL] NAME RC SECONDS", ninja's counter format, which the progress
heartbeat reads). SIGTERM/SIGINT kill every running test's group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

_running: dict[int, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()
_stopping = threading.Event()
_finished = [0, 0]  # done, total


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_one(test: dict[str, Any]) -> dict[str, Any] | None:
    out_dir = test["dir"]
    os.makedirs(out_dir, exist_ok=True)
    if _stopping.is_set():
        return None
    env = dict(os.environ)
    env.update(test.get("env") or {})
    start = time.monotonic()
    timed_out = False
    with open(os.path.join(out_dir, "stdout.txt"), "wb") as out, open(os.path.join(out_dir, "stderr.txt"), "wb") as err:
        proc = subprocess.Popen(test["argv"], stdout=out, stderr=err, env=env, start_new_session=True)
        with _lock:
            _running[proc.pid] = proc
        try:
            proc.wait(timeout=float(test["timeout_s"]))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait()
        finally:
            with _lock:
                _running.pop(proc.pid, None)
    if _stopping.is_set():
        return None  # killed by our own stop: not the test's outcome
    result = {"returncode": proc.returncode, "timed_out": timed_out, "duration_s": round(time.monotonic() - start, 3)}
    tmp = os.path.join(out_dir, ".result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(out_dir, "result.json"))
    with _lock:
        _finished[0] += 1
        counter = f"[{_finished[0]}/{_finished[1]}]"
    print(f"{counter} {test['name']} {proc.returncode} {result['duration_s']}", flush=True)
    return result


def _stop(signum: int, _frame: FrameType | None) -> None:
    _stopping.set()
    with _lock:
        procs = list(_running.values())
    for proc in procs:
        _kill_group(proc)
    sys.exit(128 + signum)


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        plan = json.load(f)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    jobs = max(1, int(plan.get("jobs", 1)))
    _finished[1] = len(plan["tests"])
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(run_one, plan["tests"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
