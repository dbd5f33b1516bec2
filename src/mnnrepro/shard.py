"""``--shard K/N`` (issue 26): one deterministic slice of a session's selected tests, for fanning a run out over
several CI jobs or machines; ``mnnrepro merge`` gives the slices one verdict.

The split: the selection is sorted, shuffled with ``random.Random(SEED)`` (a fixed integer, never Python's
``hash()``, which is salted per process), and shard K (1-based) takes every N-th test of the shuffled list starting
at position K - 1. The same selection therefore splits the same way in every process and on every machine, every
test lands in exactly one shard, and tests that sit together in the sorted list (the slow ones of one op family)
spread over the shards instead of falling into one.

Mesa's CI runs deqp-runner the same way round: it passes GitLab's 1-based ``CI_NODE_INDEX`` as ``--fraction-start``
and ``CI_NODE_TOTAL`` as ``--fraction`` (mesa ``.gitlab-ci/deqp-runner.sh``), and a third-party walkthrough of
deqp-runner describes its split as a fixed-seed shuffle followed by ``skip``/``step_by``. We did not read
deqp-runner's source to confirm it, and our shuffle (Python's Mersenne Twister) differs from its Rust one in any
case: ours is a stride over a seeded shuffle, and no shard of ours equals one of deqp-runner's.

A run of one shard is partial: every report says "shard K/N: partial, not a whole verdict", and what can only be
judged on the whole (stale expectation rows) is left to the merge.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

# The shuffle's seed: a constant derived from a fixed string, recorded in summary.json's header so that a merge
# can refuse shards split with another one. Changing it re-splits every selection.
SEED_TEXT = "mnnrepro shard v1"
SEED = int.from_bytes(hashlib.sha256(SEED_TEXT.encode()).digest()[:8], "big")

AUTO = "auto"
# GitLab sets these for `parallel: N` and `parallel: matrix` jobs: CI_NODE_INDEX is 1-based.
INDEX_VAR, TOTAL_VAR = "CI_NODE_INDEX", "CI_NODE_TOTAL"
_FORM = re.compile(r"^\s*([0-9]+)\s*/\s*([0-9]+)\s*$")
_NUMBER = re.compile(r"[0-9]+")
_HINT = "--shard K/N with integers 1 <= K <= N (shard 2 of 4: --shard 2/4), or --shard auto in a GitLab parallel job"


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    total: int

    @property
    def label(self) -> str:
        return f"shard {self.index}/{self.total}"

    @property
    def partial_line(self) -> str:
        """The words every report of a shard's run starts with."""
        return f"{self.label}: partial, not a whole verdict"

    def pick(self, tests: Iterable[str]) -> list[str]:
        """This shard's tests of ``tests``, in sorted order (the order the session runs them in)."""
        return sorted(shuffled(tests)[self.index - 1 :: self.total])

    def header(self, selection: Iterable[str]) -> dict[str, Any]:
        """summary.json's ``shard`` entry (the shape ``mnnrepro merge`` reads): the whole selection's size and this
        shard's test names."""
        whole = sorted(set(selection))
        return {
            "index": self.index,
            "total": self.total,
            "seed": SEED,
            "selection_tests": len(whole),
            "tests": self.pick(whole),
        }


def shuffled(tests: Iterable[str]) -> list[str]:
    """The selection in the fixed-seed order the shards stride over (duplicates dropped, sorted first so that the
    order the tests were found in does not matter)."""
    order = sorted(set(tests))
    random.Random(SEED).shuffle(order)
    return order


def split(tests: Iterable[str], total: int) -> list[list[str]]:
    """Every shard of ``tests`` for N = ``total``, shard 1 first."""
    return [Shard(k, total).pick(tests) for k in range(1, total + 1)]


def parse(text: str, environ: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard``'s value: "" (no shard: the whole selection), "K/N", or "auto" (GitLab's CI_NODE_INDEX and
    CI_NODE_TOTAL, read only then). Anything else is a ConfigError, raised before anything is built."""
    value = text.strip()
    if not value:
        return None
    if value == AUTO:
        return _from_gitlab(os.environ if environ is None else environ)
    match = _FORM.match(value)
    if not match:
        raise ConfigError(f"--shard {text!r} is not K/N or auto", hint=_HINT)
    return _checked(int(match[1]), int(match[2]), f"--shard {text!r}")


def _from_gitlab(environ: Mapping[str, str]) -> Shard:
    missing = [v for v in (INDEX_VAR, TOTAL_VAR) if not environ.get(v, "").strip()]
    if missing:
        raise ConfigError(
            f"--shard auto: {' and '.join(missing)} not set (GitLab sets them in a job with `parallel:`)",
            hint=f"outside such a job name the shard: {_HINT}",
        )
    index, total = environ[INDEX_VAR].strip(), environ[TOTAL_VAR].strip()
    where = f"--shard auto: {INDEX_VAR}={index!r}, {TOTAL_VAR}={total!r}"
    if not (_NUMBER.fullmatch(index) and _NUMBER.fullmatch(total)):
        raise ConfigError(f"{where}: not integers", hint=_HINT)
    return _checked(int(index), int(total), where)


def _checked(index: int, total: int, where: str) -> Shard:
    if total < 1 or not 1 <= index <= total:
        raise ConfigError(f"{where}: the shard must satisfy 1 <= K <= N and N >= 1", hint=_HINT)
    return Shard(index, total)
