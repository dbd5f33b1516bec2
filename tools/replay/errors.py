"""The replay's one error: it says what the workflow asks that the replay cannot do, or what failed around it."""

from __future__ import annotations

from mnnrepro.errors import MnnReproError


class ReplayError(MnnReproError):
    exit_code = 2
    title = "workflow replay"
