"""The training workloads (issue 23: a workload is one room; issue 24: several, as data): what one training
cell runs (model, steps, batch, seed, precision, test images, extra driver options) and how it is read from the
matrix's [workloads.NAME] tables; per model (MODELS), its parameters, its per-step inputs and the independent
float64 reference its CPU golden is checked against.

``cells`` runs one cell with whatever driver arguments it is handed and ``prepare`` builds a ref without knowing
any workload; the MNIST session, the golden, the bench, the bisect oracle and the reducer's capture take this
workload from here. Its goldens live in ``fixtures/golden/<NAME>/<ref>/`` (fixtures.golden_dir).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ... import fixtures, gradcheck
from ...errors import FixtureError
from ...fixtures import DEFAULT_WORKLOAD, Matrix, WorkloadSpec
from ...gradcheck import Dumps, GradReport, Problem, ZeroRule
from ...settings import Settings
from .models import lenet, mnistv2
from .models.lenet import SgdConfig

NAME = DEFAULT_WORKLOAD  # MNIST's workload: its goldens' directory under fixtures/golden/; a session's default
DEFAULT_MODEL = "lenet"  # the driver's default --model: not passed, so Lenet's command line stays as it was


class ReferenceCheck(Protocol):
    """A model's float64 reference, checking a run's dumps (each step from the run's own parameters)."""

    def __call__(
        self, dumps: Dumps, steps: Sequence[int], *, sgd: SgdConfig | None, losses: Sequence[float]
    ) -> GradReport: ...


def _lenet(dumps: Dumps, steps: Sequence[int], *, sgd: SgdConfig | None, losses: Sequence[float]) -> GradReport:
    return lenet.check_dumps(dumps, steps, sgd=sgd, losses=losses)


def _mnistv2(dumps: Dumps, steps: Sequence[int], *, sgd: SgdConfig | None, losses: Sequence[float]) -> GradReport:
    return mnistv2.check_dumps(dumps, steps, sgd=sgd, losses=losses)


@dataclass(frozen=True)
class Model:
    """What the suite knows of a driver model (--model, native/README.md): its parameters in model order and the
    reference that vouches for its CPU golden."""

    shapes: Mapping[str, tuple[int, ...]]
    reference: ReferenceCheck
    step_inputs: gradcheck.StepInputs  # what a run shares with its golden per step (gradcheck compares them)


# One line per driver model (a new model: its native file, its reference in models/, and a line here).
MODELS: dict[str, Model] = {
    "lenet": Model({n: lenet.PARAM_SHAPES[n] for n in lenet.PARAM_NAMES}, _lenet, lenet.STEP_INPUTS),
    "mnistv2": Model({n: mnistv2.PARAM_SHAPES[n] for n in mnistv2.PARAM_NAMES}, _mnistv2, mnistv2.STEP_INPUTS),
}
# gradcheck knows no model: it compares a golden's step inputs by what the models here register (a golden that
# names no model is the default model's, Lenet's: MNIST's goldens predate models).
for _name, _model in MODELS.items():
    gradcheck.register_step_inputs(_name, _model.step_inputs, default=_name == DEFAULT_MODEL)


@dataclass
class Training:
    """One training workload's settings for a session (the matrix's [workloads.NAME] table, --steps): what the
    driver is told."""

    steps: int
    batch_size: int
    seed: int
    precision: str
    test_limit: int
    extra_args: tuple[str, ...] = ()  # appended as is (e.g. --dump-steps 0,1 for gradient checks)
    name: str = NAME  # the workload ([workloads.NAME])
    model: str = DEFAULT_MODEL  # the driver's --model
    model_args: tuple[str, ...] = ()  # the workload's own driver options (e.g. the static workload's)

    def driver_args(self) -> list[str]:
        # Lenet's command line is the one before there were models (reuse keys and printed commands unchanged).
        model = [] if self.model == DEFAULT_MODEL else ["--model", self.model]
        return [
            *model,
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
            *list(self.model_args),
            *list(self.extra_args),
        ]


def golden_identity(workload: Training) -> dict[str, str]:
    """What a golden's provenance.json says of its workload and model (verify_golden reads them back; gradcheck
    its step inputs by the model): every golden, committed (golden.py) or a session's (session.py), by this one
    rule. MNIST's (Lenet) says nothing, as before there were workloads."""
    if (workload.name, workload.model) == (NAME, DEFAULT_MODEL):
        return {}
    return {"workload": workload.name, "model": workload.model}


def workload_of(matrix: Matrix, settings: Settings, name: str = NAME) -> Training:
    """The matrix's [workloads.NAME] workload (MNIST's by default), with --steps when given; an unknown name is a
    ConfigError listing the known ones. A matrix without [workloads] trains MNIST with the defaults below."""
    spec = matrix.workload(name) if matrix.workloads or name != NAME else None
    zero_rule(spec)  # a zero name the model does not have: known before anything is built
    training = dict(spec.training) if spec else {}
    return Training(
        steps=settings.steps or int(training.get("steps", 30)),
        batch_size=int(training.get("batch_size", 64)),
        seed=int(training.get("seed", 1)),
        precision=str(training.get("precision", "high")),
        test_limit=int(training.get("test_limit", 0)),
        name=name,
        model=spec.model if spec else DEFAULT_MODEL,
        model_args=spec.driver_args if spec else (),
    )


def model_of(spec: WorkloadSpec | None) -> Model:
    """The workload's driver model (Lenet without a spec); a model the suite has no reference for: ValueError."""
    model = spec.model if spec else DEFAULT_MODEL
    if model not in MODELS:
        raise ValueError(f"model {model!r} has no entry in workloads.train.MODELS (known: {', '.join(MODELS)})")
    return MODELS[model]


def zero_rule(spec: WorkloadSpec | None) -> ZeroRule | None:
    """The workload's tensors of exact value zero ([workloads.NAME.gradcheck]), or None. A name its model has no
    parameter of (a typo) is a FixtureError: a rule for no tensor would leave the real one judged by the relative
    tolerance, which its rounding noise fails (fixtures.py checks the names' form; the model's names live here)."""
    if not spec or not spec.zero:
        return None
    params = tuple(MODELS[spec.model].shapes) if spec.model in MODELS else ()  # an unknown model: model_of says
    unknown = [n for n in spec.zero if params and n not in params]
    if unknown:
        raise FixtureError(
            f"[workloads.{spec.name}.gradcheck] zero: {', '.join(unknown)}: no parameter of model {spec.model} "
            f"(its parameters: {', '.join(params)})"
        )
    return ZeroRule(spec.zero, spec.zero_limit, spec.zero_reason)


def check_against_reference(
    spec: WorkloadSpec | None,
    dumps: Dumps,
    steps: Sequence[int],
    *,
    sgd: SgdConfig | None,
    losses: Sequence[float],
    artifacts: Path | None = None,
    not_run: tuple[Sequence[int], int | None] = ((), None),
) -> GradReport:
    """A run's dumps against its model's float64 reference, with the workload's zero rule."""
    report = model_of(spec).reference(dumps, steps, sgd=sgd, losses=losses)
    report.not_run, report.run_steps = [int(s) for s in not_run[0]], not_run[1]
    if (rule := zero_rule(spec)) is not None:
        rule.apply(report)
    if artifacts is not None:
        report.artifacts = artifacts
        gradcheck.finish(report)
    return report


def verify_golden(golden_dir: Path, matrix: Matrix | None = None, *, workload: str | None = None) -> GradReport:
    """A golden against its own model's float64 reference, with its workload's zero rule (``gradcheck verify``,
    issue 24): its provenance names its workload and model (a golden without them is MNIST's, Lenet's).
    ``workload``: the golden's workload the caller expects (another is a "bad golden" problem)."""
    provenance = gradcheck.read_provenance(golden_dir)
    if provenance is None:
        return gradcheck.missing_golden(golden_dir)  # with the command that makes it
    matrix = matrix or fixtures.load_matrix()
    name, model = str(provenance.get("workload") or NAME), str(provenance.get("model") or DEFAULT_MODEL)
    spec = matrix.workloads.get(name)
    report = GradReport(f"{model}'s float64 reference vs {golden_dir} (workload {name})")
    if workload is not None and workload != name:
        report.problems.append(Problem("bad golden", f"it is workload {name}'s golden, not {workload}'s"))
    elif (spec.model if spec else DEFAULT_MODEL) != model or model not in MODELS:
        want = spec.model if spec else "unknown: no [workloads.NAME] table"
        report.problems.append(Problem("bad golden", f"its model is {model}, workload {name}'s model {want}"))
    if report.problems:
        return report
    return check_against_reference(
        spec,
        Dumps(golden_dir, golden_dir / "init"),
        [int(x) for x in provenance["steps"]],
        sgd=lenet.sgd_config(provenance.get("config", {})),
        losses=[float(x) for x in provenance.get("losses", [])],
    )


def names(text: str | None) -> tuple[str, ...]:
    """--workload's comma-separated names (None or empty: MNIST's)."""
    got = tuple(n.strip() for n in (text or "").split(",") if n.strip())
    return got or (NAME,)
