"""Reuse of a cell's run by content key: the CPU baseline of a (build, workload, fixtures, machine) is the same
run every time, so a warm session takes it from the cache instead of training it again.

What is stored is the cell's whole result directory (events, dumps, cell.json) as the driver left it, beside
``stored.json`` (its key's parts, where and when it ran). What is reused is only the driver's process: the
judge reads the stored files with today's rules and the gradient check compares the stored dumps again, so
a rule or golden that changed since is applied. Only a run that passed every check is stored; a session with
repeats or planted faults neither stores nor reuses; ``--no-reuse`` runs the cell again (and stores it anew).

The key: the core and driver (their content keys are in their paths), the runner and its image, the driver's
arguments (with this session's results directory written as ``<results>``), the MNIST fixture's and the
golden's manifests, and the machine's arithmetic fingerprint (fingerprint.py: what changes MNN's CPU bits).
Entries live under the core's variants directory (``variants/<core>/reuse/<key>/``), so ``cache prune``
removes them with their build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import fingerprint
from .cells import Cell, CellRun
from .contract import read_events
from .runner import Completed

FORMAT = 1
STORED = "stored.json"


def key_parts(
    *,
    core_key: str,
    driver: Path,
    runner: str,
    image: str | None,
    argv: list[str],
    results: Path,
    manifests: list[Path],
) -> dict[str, Any]:
    """Everything the stored run depends on, as one JSON-able dictionary (its sha256 is the key)."""
    return {
        "format": FORMAT,
        "core": core_key,
        "driver": str(driver),
        "runner": runner,
        "image": image or "",
        "argv": [a.replace(str(results), "<results>") for a in argv],
        "manifests": {
            str(m): hashlib.sha256(m.read_bytes()).hexdigest() if m.is_file() else "absent" for m in manifests
        },
        "machine": fingerprint.arithmetic(fingerprint.probe()),
    }


def key_of(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def entry(store: Path, key: str) -> Path:
    return store / key


def save(store: Path, key: str, parts: dict[str, Any], run: CellRun) -> Path:
    """Copy a finished run's directory into the store (aside, then renamed in: never half an entry)."""
    dest = entry(store, key)
    store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=store))
    try:
        shutil.copytree(run.result_dir, staging / "run", symlinks=True)
        stored = {
            "parts": parts,
            "from": str(run.result_dir),
            "stored": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (staging / STORED).write_text(json.dumps(stored, indent=1) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def load(store: Path, key: str, cell: Cell, result_dir: Path) -> tuple[CellRun, dict[str, Any]] | None:
    """The stored run of ``key`` copied into ``result_dir`` and read back as the driver's run would be; None when
    there is none (or it cannot be read: then it is run again, and stored again)."""
    src = entry(store, key)
    try:
        stored = json.loads((src / STORED).read_text())
        meta = json.loads((src / "run" / "cell.json").read_text())
    except (OSError, ValueError):
        return None
    shutil.rmtree(result_dir, ignore_errors=True)
    result_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / "run", result_dir, symlinks=True)
    completed = Completed(
        argv=tuple(meta.get("argv") or ()),
        returncode=int(meta.get("returncode", -1)),
        duration_s=float(meta.get("duration_s", 0.0)),
    )
    record = read_events(result_dir / "events.jsonl")
    run = CellRun(cell, result_dir, completed, record, None, list(meta.get("argv") or ()), bool(meta.get("gdb")))
    return run, {"key": key, "from": stored.get("from"), "stored": stored.get("stored"), "entry": str(src)}
