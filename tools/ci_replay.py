#!/usr/bin/env python3
"""Replay jobs of the GitHub Actions workflow locally, each in a fresh Debian 12 container (tools/replay/).

    python tools/ci_replay.py --list
    python tools/ci_replay.py --job checks [--worktree] [--matrix key=value,...] [--mirror MNN.git]

Needs PyYAML (pip install -e '.[ci]') and a Docker engine. Runs from any directory: the checkout's tools/ and
src/ are put first on the path, so the replay and the library are this checkout's.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tools.replay.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
