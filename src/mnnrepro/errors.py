"""Errors with their own exit codes. A message says what failed, why, and what to do next."""

from __future__ import annotations


class MnnReproError(Exception):
    """Base class: every failure the suite reports on purpose."""

    exit_code = 2
    title = "error"

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"mnnrepro: {self.title}: {self.message}"
        if self.hint:
            text += f"\n  what to do: {self.hint}"
        return text


class ConfigError(MnnReproError):
    exit_code = 2
    title = "configuration error"


class SourceError(MnnReproError):
    exit_code = 3
    title = "MNN source unavailable"


class BuildError(MnnReproError):
    exit_code = 4
    title = "build failed"


class FixtureError(MnnReproError):
    exit_code = 5
    title = "fixture rejected"


class EnvironmentProblem(MnnReproError):
    exit_code = 6
    title = "environment problem"


class HostCommandError(MnnReproError):
    """A command run on this machine (runner.host_command) failed, timed out or could not start."""

    exit_code = 6
    title = "command failed"

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        argv: tuple[str, ...] = (),
        returncode: int | None = None,
        timed_out: bool = False,
        tail: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = argv
        self.returncode = returncode  # None: timed out, or never started
        self.timed_out = timed_out
        self.tail = tail


# Exit code of a whole session when it ran, but at least one cell missed its expectation.
EXIT_MISMATCH = 1
