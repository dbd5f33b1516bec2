"""Runs a batch of test processes inside one runner call (``python3 optest_batch.py PLAN.json``); standard library
only, not imported by the harness (like gdb_capture.py it runs where the runner runs: on the host or inside the
container, so a sweep of hundreds of tests costs one container, not hundreds).

PLAN.json: {"jobs": N, "tests": [{"name", "dir", "argv", "env", "timeout_s"}, ...]}. Each test runs in its own
process group with its own time limit, stdout and stderr to DIR/stdout.txt and DIR/stderr.txt, and its outcome
to DIR/result.json ({"returncode", "timed_out", "duration_s"}) written last and atomically: a test without
result.json did not finish (the batch was interrupted), and the harness runs it again. One line per finished test
on stdout ("[DONE/TOTAL] NAME RC SECONDS", ninja's counter format, which the progress
heartbeat reads). SIGTERM/SIGINT kill every running test's group.

A test entry may carry "validation": {"fifo", "log", "failed", "grace_s"[, "compressed"]} (``ops run
--vk-validation``, issue 25): the Khronos layer's log_filename is then the FIFO, and a thread per running test
appends what the layer writes there to the log, as mnnrepro.validation.relay does for a training cell (1.3.239
truncates log_filename at every vkCreateInstance; reopening a FIFO truncates nothing). Written here again because
this script imports nothing of mnnrepro; the rules are the same: the FIFO is opened read-write (the layer's open
never blocks, no end of file between instances), a log that cannot be written is still drained and the failure
written to "failed", and a writer still there "grace_s" after the test ended (a process it left behind) is abandoned
with "failed" written: the harness then calls the test NOT-EXERCISED for validation, never counts a short log. With
"compressed" (a path) the log, once the relay has closed and kept it whole, is gzipped there and the plain log
removed: the layer writes tens of MB per heavy test (op/convolution/conv2d at 3.3.0: 7,212 instances; the first 8
validated tests left 680 MB) and compresses 24 to 155 times (3.3.0, lavapipe: image conv2d 313 MB -> 12.9 MB in 1.7
s, buffer matmul 94 MB -> 0.6 MB); the harness reads the .gz through the same chunked parse. A log that cannot be
compressed stays as it is.
"""

from __future__ import annotations

import gzip
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import IO, Any

_running: dict[int, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()
_stopping = threading.Event()
_finished = [0, 0]  # done, total


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pump(fd: int, log: str, failed: str, done: threading.Event, abandon: threading.Event) -> None:
    """Appends what comes through the FIFO to the log until the test ended and the pipe is empty (or abandoned)."""
    out: IO[bytes] | None = None
    try:
        out = open(log, "ab")  # closed below, after the last read
    except OSError as error:
        _write(failed, f"{log}: {error}\n")
    while not abandon.is_set():
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if out is not None:
                try:
                    out.write(chunk)
                except OSError as error:  # keep draining: a full pipe would stall the layer, and the test with it
                    _write(failed, f"{log}: {error}\n")
                    out.close()
                    out = None
            continue
        if done.is_set():
            break
    if out is not None:
        out.close()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def start_relay(spec: dict[str, Any]) -> Callable[[], None]:
    """The FIFO made and its relay thread started; returns what ends it (call it once the test process ended)."""
    fifo, log, failed = spec["fifo"], spec["log"], spec["failed"]
    for stale in (fifo, failed):
        if os.path.lexists(stale):
            os.unlink(stale)
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    done, abandon = threading.Event(), threading.Event()
    thread = threading.Thread(target=_pump, args=(fd, log, failed, done, abandon), daemon=True)
    thread.start()

    def stop() -> None:
        grace = float(spec.get("grace_s", 10.0))
        done.set()
        thread.join(grace)
        if thread.is_alive():
            abandon.set()
            thread.join()
            why = f"still written {grace:g} s after the test ended (a process it left holds the FIFO)"
            _write(failed, f"{log}: {why}\n")
        os.close(fd)
        os.unlink(fifo)
        if spec.get("compressed") and not os.path.exists(failed):
            compress(log, spec["compressed"])

    return stop


def compress(log: str, target: str) -> None:
    """The whole log gzipped to ``target`` (written aside, then renamed: a .gz that exists is whole) and the plain log
    removed; on any error the plain log stays, whole, and the harness reads that instead."""
    if not os.path.isfile(log):
        return
    tmp = target + ".tmp"
    try:
        with open(log, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, target)
    except OSError:
        if os.path.exists(tmp):
            os.unlink(tmp)
        return
    os.unlink(log)


def run_one(test: dict[str, Any]) -> dict[str, Any] | None:
    out_dir = test["dir"]
    os.makedirs(out_dir, exist_ok=True)
    if _stopping.is_set():
        return None
    env = dict(os.environ)
    env.update(test.get("env") or {})
    stop_relay = start_relay(test["validation"]) if test.get("validation") else None
    try:
        start = time.monotonic()
        returncode, timed_out = _run(test, out_dir, env)
    finally:
        if stop_relay is not None:
            stop_relay()  # the log is whole (or "failed" written) before result.json says the test finished
    if _stopping.is_set():
        return None  # killed by our own stop: not the test's outcome
    result = {"returncode": returncode, "timed_out": timed_out, "duration_s": round(time.monotonic() - start, 3)}
    tmp = os.path.join(out_dir, ".result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(out_dir, "result.json"))
    with _lock:
        _finished[0] += 1
        counter = f"[{_finished[0]}/{_finished[1]}]"
    print(f"{counter} {test['name']} {returncode} {result['duration_s']}", flush=True)
    return result


def _run(test: dict[str, Any], out_dir: str, env: dict[str, str]) -> tuple[int, bool]:
    """The test's process in its own group, under its time limit: (exit status, killed at the limit)."""
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
    return proc.returncode, timed_out


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
