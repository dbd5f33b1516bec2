"""A training session split into shards (issue 26): what a shard says of itself, and what only the whole can judge.

``run SESSION --shard K/N`` runs shard K's slice of the session's GPU cells (``session.shard_cells``: shard.py's
stride over a fixed-seed shuffle of the cell ids) with the CPU baselines those cells need. Each cell is judged there
exactly as in a whole run: its row, its CPU baseline, its golden are all its own. What a shard cannot judge is a
row's staleness: one ``[[expect]]`` row judges the cells of several refs, ICDs or workloads, which may sit in other
shards, so a row is stale only when no cell of the whole session showed what it expects and one trained right
instead (``judge_whole``: the unsharded session and ``mnnrepro merge`` call it; a shard leaves it to the merge).
"""

from __future__ import annotations

from typing import Any

from ... import shard
from ...judge import FIXED, PASS
from ...settings import Settings

# Verdicts of a cell that trained right: where its row expected a bug (or known wrong values), the row may be stale.
TRAINED_RIGHT = (PASS, FIXED)
STALE_WORDS = "the row is stale"
DEFERRED_WORDS = "the row may be stale (rows are judged over every shard: mnnrepro merge)"


def partial_line(record: dict[str, Any]) -> str:
    """ "shard K/N: partial, not a whole verdict" (shard.py's words, as the ops session says them)."""
    return shard.Shard(int(record["index"]), int(record["total"])).partial_line


def slice_line(record: dict[str, Any]) -> str:
    """What the shard runs: its GPU cells of the whole session's, and the CPU baselines they need."""
    cpu = ", ".join(record.get("cpu_cells") or []) or "none"
    return (
        f"{partial_line(record)}: {len(record['tests'])} of the session's {record['selection_tests']} GPU cells, "
        f"with the CPU baseline(s) they need ({cpu})"
    )


def verdict_settings(settings: Settings, names: tuple[str, ...], workloads: tuple[str, ...]) -> dict[str, Any]:
    """The settings a training verdict depends on, recorded in the header: shards that differ in one are not one
    run (the merge refuses them). Runner, jobs, cache and results paths change no rule a cell is judged by."""
    return {
        "variants": list(names),
        "icds": list(settings.icds),
        "workloads": list(workloads),
        "steps": settings.steps,
        "timeout_s": settings.timeout_s,
        "repeat": settings.repeat,
        "faults": list(settings.faults),
        "vk_validation": settings.vk_validation,
    }


def unsay_stale(reason: str) -> str:
    """A shard's cell reason without the judge's claim that its row is stale (other shards may use the row)."""
    return reason.replace(STALE_WORDS, DEFERRED_WORDS)


def mark_partial(data: dict[str, Any], record: dict[str, Any]) -> None:
    """summary.json of a shard's run: its `shard` record, status partial, and no stale rows of its own."""
    data["shard"] = record
    data["status"] = "partial"
    data["stale_not_judged"] = "stale rows are judged only over every shard's cells (mnnrepro merge)"


def unexpected_passes(cells: list[dict[str, Any]]) -> list[str]:
    """Cells that trained right where their row expected something else (a bug, known wrong values)."""
    return [
        str(c["cell"])
        for c in cells
        if c.get("verdict") in TRAINED_RIGHT and c.get("expected") and c.get("expected") != c.get("verdict")
    ]


def judge_whole(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """``stale``: every row (the ``row`` a cell's evidence names) that judged at least one cell, where no cell it
    judged showed what it expects and at least one trained right; ``unexpected_passes`` (``unexpected_passes``).
    Over the whole session only: a shard's cells are not every cell a row judges."""
    passed = set(unexpected_passes(cells))
    by_row: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        row = (c.get("evidence") or {}).get("row")
        if row:
            by_row.setdefault(str(row), []).append(c)
    stale = []
    for row, judged in sorted(by_row.items()):
        showed = [c for c in judged if c.get("verdict") == c.get("expected")]
        right = [str(c["cell"]) for c in judged if c["cell"] in passed]
        if right and not showed:
            stale.append({"row": row, "cells": [str(c["cell"]) for c in judged], "trained_right": right})
    return {"stale": stale, "unexpected_passes": sorted(passed)}


def whole_lines(data: dict[str, Any]) -> list[str]:
    """The terminal's and summary.md's words on what is judged over the whole: stale rows, unexpected passes, or
    for a shard that they wait for the merge."""
    if data.get("shard"):
        return [f"{partial_line(data['shard'])}: {data.get('stale_not_judged', '')}"]
    out = [
        f"STALE {s['row']}: trained right in {', '.join(s['trained_right'])}; no cell it judged showed what it expects"
        for s in data.get("stale") or []
    ]
    if data.get("unexpected_passes"):
        out.append(f"unexpected passes (trained right against their row): {', '.join(data['unexpected_passes'])}")
    return out
