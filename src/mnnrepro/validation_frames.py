"""Where in MNN each VUID of a validated cell was issued (issue 25): one rerun of the cell's driver per VUID,
under gdb, with the layer's break action and every other message id muted; the top frames inside MNN.

validation.assess says which VUIDs a cell raised and how often, not where. The Khronos layer (1.3.239) can
break: with debug_action `VK_DBG_LAYER_ACTION_LOG_MSG,VK_DBG_LAYER_ACTION_BREAK` it logs a message, then
raise(SIGTRAP)s in the thread that made the offending call. A process no debugger holds dies of that, so the break
action is never in a judged run: only here, each rerun in its own directory (RESULT_DIR/attribution/<VUID>/), the
cell's own files left as judged. Under gdb (gdb_capture.py, the same capture as a crash) the SIGTRAP stops the
driver and crash.json holds the calling thread's frames; those inside MNN (libMNN*, MNN's source paths) name the
call, e.g. `MNN::VulkanImage::insertMemoryBarrier` for #4015's VUID-VkImageMemoryBarrier-sType-sType
(alibaba/MNN#4015). `khronos_validation.message_id_filter` (a comma-separated list of VUID strings in 1.3.239's
settings file) mutes every other id the cell raised, and the canary's, so the first break is the VUID's own; the
rerun's log says which message broke, and a break on another id attributes nothing.

No gdb, the switch off (`--vk-attribution off`), or a cell NOT-EXERCISED: "skipped" with why, never an error.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from . import validation
from .cells import GDB_SCRIPT, OUTPUT_OPTIONS
from .runner import Completed, Runner

DIRNAME = "attribution"
MAX_VUIDS = 8  # reruns per cell: the most frequent VUIDs first (one rerun each: this is the attribution's cost)
# Seconds of reruns per cell: no new rerun starts after it (a rare VUID that does not come back runs the whole cell
# under gdb each time; 3.6.1's image mode on SwiftShader took minutes for 8). The rest are listed, not attributed.
BUDGET_S = 600.0
MAX_FRAMES = 6
BREAK_ACTION = "VK_DBG_LAYER_ACTION_LOG_MSG,VK_DBG_LAYER_ACTION_BREAK"
# A rerun's time limit: the VUID was raised within the cell's own run, so three times its duration plus a minute
# for gdb's start and symbol loading (and never more than the cell's own limit).
MIN_TIMEOUT_S = 60.0
DONE, PARTIAL, SKIPPED = "done", "partial", "skipped"
# Where a frame is inside MNN when gdb names no library (a static link): MNN's source directories.
_MNN_DIRS = ("source/backend/", "source/core/", "source/geometry/", "source/shape/", "source/math/", "express/")
_MNN_TREE = re.compile(r"(?:^|/)((?:source|express|tools|include/MNN)/.*)$")
_SYSTEM_DIRS = ("/usr/include/", "/usr/lib/", "/usr/local/include/")  # system headers, not MNN
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Rerun:
    """What a cell ran, to run it again: the driver's argv (no gdb, no canary), the cell's own environment (its
    cell.json `cell_env`: ICD, loader and fault variables) and its mode."""

    argv: list[str]
    env: dict[str, str]
    mode: str
    timeout_s: float


def rerun_of(result_dir: Path, argv: Sequence[str], mode: str, timeout_s: float, ran_s: float) -> Rerun:
    """The cell's rerun: its environment from cell.json (cells.run_cell wrote it), its time limit from its run."""
    env = json.loads((result_dir / "cell.json").read_text()).get("cell_env") or {}
    limit = min(timeout_s, max(MIN_TIMEOUT_S, 3 * ran_s + MIN_TIMEOUT_S))
    return Rerun(list(argv), {str(k): str(v) for k, v in env.items()}, mode, limit)


def slug(vuid: str) -> str:
    return _SLUG.sub("_", vuid)[:120] or "_"


def rerun_argv(argv: Sequence[str], out: Path) -> list[str]:
    """The driver's argv writing only ``out``: --out and every directory option (cells.OUTPUT_OPTIONS) moved
    there, the canary dropped (its VUID would break first; it is muted as well)."""
    moved = {"--out": out, **{o: out / o.lstrip("-") for o in OUTPUT_OPTIONS}}
    result: list[str] = []
    for prev, arg in pairwise([None, *argv]):
        if arg == validation.CANARY_ARG:
            continue
        result.append(str(moved[prev]) if prev in moved else str(arg))
    return result


def is_mnn(frame: dict[str, Any]) -> bool:
    """A frame of MNN's own code: in a libMNN* library (libMNN, libMNN_Express, libMNN_Vulkan, ...) or, where gdb
    names no library, in MNN's source tree. The layer's, the loader's, libc's and the driver's frames are not, nor
    the standard library's templates inlined into libMNN (their file is a system header: seen at 3.3.0, six
    std::shared_ptr frames under MNN::VulkanDevice::VulkanDevice)."""
    library = Path(str(frame.get("library") or "")).name
    file = str(frame.get("file") or "")
    if file.startswith(_SYSTEM_DIRS):
        return False
    if library:
        return library.startswith("libMNN")
    return any(d in file for d in _MNN_DIRS)


def frame_text(frame: dict[str, Any]) -> str:
    """``function (file:line)``, the file relative to MNN's tree (no machine path)."""
    name = str(frame.get("function") or "??")
    where = _MNN_TREE.search(str(frame.get("file") or ""))
    return f"{name} ({where.group(1)}:{frame.get('line')})" if where else name


def mnn_frames(crash: dict[str, Any]) -> list[str]:
    """The top MAX_FRAMES frames inside MNN of a gdb capture (crash.json), innermost first."""
    frames = crash.get("frames")
    return [frame_text(f) for f in frames if isinstance(f, dict) and is_mnn(f)][:MAX_FRAMES] if frames else []


def judge_rerun(vuid: str, completed: Completed, crash: dict[str, Any] | None, log_text: str) -> tuple[list[str], str]:
    """The VUID's MNN frames from its rerun, and a note where there are none (or the trap is not the VUID's)."""
    if crash is None or crash.get("signal") != "SIGTRAP":
        if completed.timed_out:
            how = "ran past its time limit"
        elif crash is not None:
            how = f"died of {crash.get('signal')}"
        else:
            how = f"ended with exit code {completed.returncode}"
        return [], f"no trap: the rerun {how} before the layer broke on {vuid}"
    seen = list(validation.parse_log(log_text).counts)
    if vuid not in seen:
        on = f"on {seen[-1]} (not raised in the cell)" if seen else "with an empty log"
        return [], f"the layer broke {on}, not on {vuid}: not attributed"
    frames = mnn_frames(crash)
    top = ", ".join(str(f.get("function") or "??") for f in (crash.get("frames") or [])[:3])
    return frames, "" if frames else f"trapped, but no frame inside MNN (top: {top})"


def run_one(
    vuid: str, mute: list[str], rerun: Rerun, out: Path, *, runner: Runner, gdb_path: str
) -> tuple[list[str], str]:
    """One rerun under gdb with the break action, ``vuid`` the only id not muted; its MNN frames and note."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    settings = out / validation.SETTINGS_FILE
    fifo = out / validation.FIFO
    settings.write_text(validation.settings_text(fifo, rerun.mode, action=BREAK_ACTION, mute=mute))
    env = {
        **rerun.env,
        "VK_INSTANCE_LAYERS": validation.LAYER,
        "VK_LAYER_SETTINGS_PATH": str(settings),
        "MNNREPRO_CRASH_DIR": str(out),
    }
    argv = [gdb_path, "-q", "-nx", "-batch", "-x", str(GDB_SCRIPT), "--args", *rerun_argv(rerun.argv, out)]
    with validation.relay(out) as log:
        completed = runner.run(
            argv,
            env=env,
            timeout_s=rerun.timeout_s,
            stdout_path=out / "stdout.txt",
            stderr_path=out / "stderr.txt",
            writable=[out],
        )
    crash = json.loads((out / "crash.json").read_text()) if (out / "crash.json").is_file() else None
    log_text = log.read_text(errors="replace") if log.is_file() else ""
    frames, note = judge_rerun(vuid, completed, crash, log_text)
    summary = {"vuid": vuid, "argv": argv, "env": env, "muted": mute, "returncode": completed.returncode}
    summary |= {"signal": completed.signal_name, "timed_out": completed.timed_out, "frames": frames, "note": note}
    summary["seconds"] = round(completed.duration_s, 2)
    (out / "attribution.json").write_text(json.dumps(summary, indent=1) + "\n")
    return frames, note


def _why_not(
    record: dict[str, Any], *, enabled: bool, gdb_path: str | None, why_no_gdb: str, rerun: Rerun | None
) -> str:
    """Why a cell's VUIDs are not attributed ("" when they are)."""
    if not enabled:
        return "turned off (--vk-attribution off, MNNREPRO_VK_ATTRIBUTION)"
    if record.get("status") != validation.EXERCISED:
        return f"the cell is {validation.NOT_EXERCISED} for validation"
    if not record.get("vuids"):
        return "no VUID to attribute"
    if gdb_path is None:
        return f"no gdb: {why_no_gdb or 'none found'} (the break action needs a debugger)"
    if rerun is None:
        return "the cell's command line is not known"
    return ""


def attribute(
    record: dict[str, Any],
    result_dir: Path,
    rerun: Rerun | None,
    *,
    runner: Runner,
    gdb_path: str | None,
    why_no_gdb: str = "",
    enabled: bool = True,
    limit: int = MAX_VUIDS,
    budget_s: float = BUDGET_S,
    say: Callable[[str], None] = print,
) -> None:
    """Adds to a validation record (validation.assess) each VUID's `frames` (and a `note` where it has none) and
    `attribution` {status, reason, runs, seconds}; skipped, with why, when it cannot or should not run."""
    vuids: dict[str, dict[str, Any]] = record.get("vuids") or {}
    why = _why_not(record, enabled=enabled, gdb_path=gdb_path, why_no_gdb=why_no_gdb, rerun=rerun)
    if why or gdb_path is None or rerun is None:
        record["attribution"] = {"status": SKIPPED, "reason": why, "runs": 0, "seconds": 0.0}
        return
    started, chosen = time.monotonic(), list(vuids)[:limit]  # assess sorts them by count, most frequent first
    for number, vuid in enumerate(list(chosen)):
        if time.monotonic() - started > budget_s:  # the cell's attribution budget is spent: the rest not rerun
            for late in chosen[number:]:
                vuids[late] |= {"frames": [], "note": f"not attributed: the cell's {budget_s:g} s of reruns were spent"}
            chosen = chosen[:number]
            break
        say(f"  attribution: {vuid} (rerun under gdb, the layer breaking on it alone)")
        mute = [v for v in vuids if v != vuid] + [validation.CANARY_VUID]
        frames, note = run_one(vuid, mute, rerun, result_dir / DIRNAME / slug(vuid), runner=runner, gdb_path=gdb_path)
        vuids[vuid]["frames"] = frames
        if note:
            vuids[vuid]["note"] = note
    left = [v for v in vuids if v not in chosen]
    for vuid in left:
        vuids[vuid].setdefault("note", f"not attributed: only the {limit} most frequent VUIDs are rerun")
        vuids[vuid]["frames"] = []
    missing = [v for v in chosen if not vuids[v]["frames"]]
    reason = f"{len(chosen) - len(missing)} of {len(vuids)} VUID(s) placed in MNN"
    reason += f"; not placed: {', '.join(missing)}" if missing else ""
    reason += f"; not rerun (over the cap of {limit} or the {budget_s:g} s budget): {', '.join(left)}" if left else ""
    record["attribution"] = {
        "status": PARTIAL if missing or left else DONE,
        "reason": reason,
        "runs": len(chosen),
        "seconds": round(time.monotonic() - started, 1),
        "not_attributed": missing + left,
    }
