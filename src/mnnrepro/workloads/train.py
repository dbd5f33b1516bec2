"""MNIST training's workload (issue 23: a workload is one room): what one training cell runs (steps, batch,
seed, precision, test images, extra driver options) and how it is read from the matrix's [training] table.

``cells`` runs one cell with whatever driver arguments it is handed and ``prepare`` builds a ref without knowing
any workload; the MNIST session, the golden, the bench, the bisect oracle and the reducer's capture take this
workload from here. Its goldens live in ``fixtures/golden/<NAME>/<ref>/`` (fixtures.golden_dir).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..fixtures import Matrix
from ..settings import Settings

NAME = "mnist"  # the workload's name: its goldens' directory under fixtures/golden/


@dataclass
class Training:
    """MNIST training's settings for one session (the matrix's [training] table, --steps): what the driver is told."""

    steps: int
    batch_size: int
    seed: int
    precision: str
    test_limit: int
    extra_args: tuple[str, ...] = ()  # appended as is (e.g. --dump-steps 0,1 for gradient checks)

    def driver_args(self) -> list[str]:
        return [
            "--steps",
            str(self.steps),
            "--batch-size",
            str(self.batch_size),
            "--seed",
            str(self.seed),
            "--precision",
            self.precision,
            "--test-limit",
            str(self.test_limit),
            *list(self.extra_args),
        ]


def workload_of(matrix: Matrix, settings: Settings) -> Training:
    """The matrix's [training] workload, with --steps when given."""
    training = dict(matrix.training)
    return Training(
        steps=settings.steps or int(training.get("steps", 30)),
        batch_size=int(training.get("batch_size", 64)),
        seed=int(training.get("seed", 1)),
        precision=str(training.get("precision", "high")),
        test_limit=int(training.get("test_limit", 0)),
    )
