"""errors: each failure class has its own exit code and a message that says what to do."""

from __future__ import annotations

import pytest

from mnnrepro import errors


def test_render_includes_title_message_and_hint() -> None:
    text = errors.SourceError("no tree", hint="pass --source").render()
    assert text == "mnnrepro: MNN source unavailable: no tree\n  what to do: pass --source"


def test_render_without_hint_is_one_line() -> None:
    assert errors.BuildError("ninja failed").render() == "mnnrepro: build failed: ninja failed"


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.ConfigError, 2),
        (errors.SourceError, 3),
        (errors.BuildError, 4),
        (errors.FixtureError, 5),
        (errors.EnvironmentProblem, 6),
    ],
)
def test_exit_codes(cls: type[errors.MnnReproError], code: int) -> None:
    assert cls.exit_code == code
    assert issubclass(cls, errors.MnnReproError)


def test_a_mismatch_exit_code_differs_from_every_error() -> None:
    codes = {c.exit_code for c in errors.MnnReproError.__subclasses__()}
    assert errors.EXIT_MISMATCH == 1
    assert errors.EXIT_MISMATCH not in codes
    assert 0 not in codes
