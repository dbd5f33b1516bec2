"""Runs the native driver for one cell (ref x variant x ICD) and collects its files.

Result directory of a cell: events.jsonl (the driver), stdout.txt/stderr.txt, cell.json (command line, the
whole environment the driver got and the cell's own part of it, the paths it could write, exit status, signal,
duration, a container limit that ended it), and on a crash crash.json + backtrace.txt.

The driver writes only its result dir and the directories its own options name (OUTPUT_OPTIONS); in a
container nothing else is writable. ``--icd host`` on the host runner passes the caller's Vulkan/OpenCL loader
variables (runner.loader_env) explicitly, recorded as ``env_from_caller``; every other variable is the suite's.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

from . import faults as planted
from . import validation, variants
from .contract import RunRecord, read_events
from .fixtures import DEFAULT_WORKLOAD, MNIST
from .icd import Icd
from .progress import heartbeat
from .runner import Completed, Runner, loader_env

GDB_SCRIPT = Path(__file__).with_name("gdb_capture.py")
# Driver options that name a directory it writes (native/README.md), besides --out.
OUTPUT_OPTIONS = ("--save-init", "--dump-dir")
BACKEND_OF = {v.name: v.backend for v in variants.TABLE}


@dataclass(frozen=True)
class Cell:
    ref: str
    variant: str
    icd: str  # "-" where no ICD applies (cpu, opencl)
    workload: str = DEFAULT_WORKLOAD  # the training workload ([workloads.NAME] of fixtures/matrix.toml)

    @property
    def backend(self) -> str:
        return BACKEND_OF[self.variant]

    @property
    def id(self) -> str:
        """ref/variant/icd; another workload than MNIST's is named first (``mnistv2:3.3.0/cpu/-``), so MNIST's
        ids, result directories and tables read as they did before there were workloads."""
        where = "" if self.workload == DEFAULT_WORKLOAD else f"{self.workload}:"
        return f"{where}{self.ref}/{self.variant}/{self.icd}"

    @property
    def dirname(self) -> str:
        """The cell's directory name: its id with "__" for "/" and ":" (a colon in a path breaks the Docker
        engine's "host:container:mode" volume spec)."""
        return self.id.replace("/", "__").replace(":", "__")


def is_validated(cell: Cell, vk_validation: str) -> bool:
    """Whether the Khronos layer watches this cell (issue 25): asked for (validation.MODES other than off) and a
    Vulkan cell. The one rule run_cell and every session apply (a second copy could let a session judge a log the
    cell never wrote, or skip one it did)."""
    return vk_validation != "off" and cell.backend == "vulkan"


class DriverArgs(Protocol):
    """A workload's part of the driver's command line (after the cell's backend, data and result dir): cells
    runs what it is handed and knows no workload (workloads.train holds MNIST's)."""

    def driver_args(self) -> list[str]: ...


@dataclass
class CellRun:
    cell: Cell
    result_dir: Path
    completed: Completed
    record: RunRecord
    crash: dict[str, Any] | None
    argv: list[str]
    gdb: bool

    @property
    def backtrace_path(self) -> Path | None:
        path = self.result_dir / "backtrace.txt"
        return path if path.is_file() else None


def run_cell(
    cell: Cell,
    *,
    driver: Path,
    plugin: Path | None,
    icd: Icd | None,
    workload: DriverArgs,
    timeout_s: float,
    runner: Runner,
    result_dir: Path,
    use_gdb: bool = True,
    gdb_path: str | None = None,  # gdb as the runner sees it; None: look it up on this host
    data_dir: Path = MNIST,
    faults: tuple[str, ...] = (),
    say: Callable[[str], None] = print,
    heartbeat_s: float = 30.0,
    vk_validation: str = "off",  # validation.MODES: the Khronos layer on a Vulkan cell (issue 25)
) -> CellRun:
    result_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("crash.json", "backtrace.txt", "events.jsonl"):
        (result_dir / stale).unlink(missing_ok=True)
    argv = driver_argv(cell, driver, plugin, workload, result_dir, data_dir)
    env, from_caller = _cell_env(icd, runner, faults)
    watched = is_validated(cell, vk_validation)
    if watched:  # every workload's Vulkan cell: the layer's settings file, its variables, the driver's canary
        env.update(validation.prepare_cell(result_dir, vk_validation))
        argv.append(validation.CANARY_ARG)
    gdb = (gdb_path or shutil.which("gdb")) if use_gdb else None
    full = [gdb, "-q", "-nx", "-batch", "-x", str(GDB_SCRIPT), "--args", *argv] if gdb else argv
    if "hide-libvulkan" in faults:
        full, fault_env = planted.hide_libvulkan(full, result_dir / ".fault", runner.name)
        env.update(fault_env)
    env["MNNREPRO_CRASH_DIR"] = str(result_dir)
    writable = [result_dir, *(Path(a) for o, a in pairwise(argv) if o in OUTPUT_OPTIONS)]
    events = result_dir / "events.jsonl"
    with (
        heartbeat(cell.id, say=say, detail=lambda: last_stage(events), interval_s=heartbeat_s),
        validation.relay(result_dir) if watched else nullcontext(),
    ):
        completed = runner.run(
            full,
            writable=writable,
            env=env,
            timeout_s=timeout_s,
            stdout_path=result_dir / "stdout.txt",
            stderr_path=result_dir / "stderr.txt",
        )
    crash = _read_crash(result_dir)
    run = CellRun(cell, result_dir, completed, read_events(events), crash, full, bool(gdb))
    _write_cell_json(
        run, env=env, from_caller=from_caller, writable=writable, runner=runner.name, timeout_s=timeout_s, faults=faults
    )
    return run


def driver_argv(
    cell: Cell, driver: Path, plugin: Path | None, workload: DriverArgs, result_dir: Path, data_dir: Path
) -> list[str]:
    """The driver's command line (without gdb): backend, data, result dir, workload, and the plugin to load."""
    argv = [
        str(driver),
        "--backend",
        cell.backend,
        "--data",
        str(data_dir),
        "--out",
        str(result_dir),
        *workload.driver_args(),
    ]
    if plugin is not None:
        argv += ["--plugin", str(plugin)]
    return argv


def _cell_env(icd: Icd | None, runner: Runner, faults: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """The cell's own environment (the ICD's, the caller's loader variables for the host ICD on the host runner,
    a planted fault's), and the caller's part of it."""
    env = dict(icd.env) if icd else {}
    from_caller = loader_env() if icd is not None and icd.name == "host" and runner.name == "host" else {}
    env.update(from_caller)
    env.update(planted.driver_env(faults))
    return env, from_caller


def _read_crash(result_dir: Path) -> dict[str, Any] | None:
    """crash.json (gdb_capture.py wrote it on a crash), or None."""
    if (result_dir / "crash.json").is_file():
        data: dict[str, Any] = json.loads((result_dir / "crash.json").read_text())
        return data
    return None


def _write_cell_json(
    run: CellRun,
    *,
    env: dict[str, str],
    from_caller: dict[str, str],
    writable: list[Path],
    runner: str,
    timeout_s: float,
    faults: tuple[str, ...],
) -> None:
    """cell.json: the command line, the environment, the paths it could write, and how it ended."""
    completed = run.completed
    cell_json = {
        "cell": run.cell.id,
        "argv": run.argv,
        # The whole environment (the runner's answer; a runner that does not say: the cell's own part).
        "env": dict(completed.env) if completed.env is not None else env,
        "cell_env": env,
        "env_from_caller": from_caller,
        "writable": [str(p) for p in writable],
        "runner": runner,
        "returncode": completed.returncode,
        "signal": completed.signal_name,
        "timed_out": completed.timed_out,
        "killed_by": completed.killed_by,
        "timeout_s": timeout_s,
        "duration_s": round(completed.duration_s, 3),
        "gdb": run.gdb,
        "faults": list(faults),
    }
    (run.result_dir / "cell.json").write_text(json.dumps(cell_json, indent=1))


def last_stage(events: Path, tail_bytes: int = 8192) -> str | None:
    """The driver's latest stage ("stage sgd_step, step 12"), from the end of its events.jsonl (heartbeats only)."""
    try:
        with open(events, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - tail_bytes))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue  # half written, or cut by the seek
        if isinstance(event, dict) and event.get("event") == "stage" and "name" in event:
            step = f", step {event['step']}" if "step" in event else ""
            return f"stage {event['name']}{step}"
    return None
