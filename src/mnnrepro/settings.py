"""One configuration cascade: defaults -> pyproject [tool.mnnrepro] -> MNNREPRO_* variables -> command line.

Unknown keys are rejected at every level, and the resolved settings are printed at the start of a run.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .faults import validate
from .fixtures import ROOT
from .icd import KNOWN

UPSTREAM_GIT_URL = "https://github.com/alibaba/MNN.git"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnnrepro"


@dataclass(frozen=True)
class Settings:
    ref: str = ""  # "" -> fixtures/matrix.toml default_ref
    source: Path | None = None  # an MNN tree to use as is
    git_url: str = UPSTREAM_GIT_URL
    cache_dir: Path = field(default_factory=default_cache_dir)
    results_dir: Path = ROOT / "results"
    icds: tuple[str, ...] = ("lavapipe", "swiftshader")
    steps: int = 0  # 0 -> the workload's steps (the matrix's [workloads.NAME])
    timeout_s: int = 0  # per driver run; 0 -> the matrix's [timeouts]
    repeat: int = 1  # run each cell N times: crash reproduction rate and determinism
    runner: str = "auto"  # auto: docker when an engine answers, else host
    base_image: str = "debian:bookworm-slim"  # BASE_IMAGE of docker/Dockerfile
    host_ca: Path | None = None  # a CA bundle baked into the image, for networks with TLS interception
    debian_mirror: str = ""  # for bootstrapping the base image; "" -> the mirror this machine's apt uses
    keep_containers: bool = False  # keep a failed command's container for debugging
    jobs: int = 0  # 0 -> ninja's default
    gdb: bool = True
    # A missing gdb (GPU servers often have only cuda-gdb) is a warning: crash signatures are then judged by signal
    # only. CI keeps gdb in its image and sets MNNREPRO_REQUIRE_GDB=1, which makes it a failure again.
    require_gdb: bool = False
    clone: bool = True  # may a missing source be cloned?
    faults: tuple[str, ...] = ()  # planted faults (faults.py), for proving the suite notices them
    reuse: bool = True  # take the CPU baseline of the same build and workload from the cache (reuse.py)
    # The ops session (MNN's own tests, issue 13):
    select: tuple[str, ...] = ()  # test-name prefixes; () -> fixtures/ops/expectations.toml's selection
    variants: tuple[str, ...] = ()  # () -> cpu, vulkan-image, vulkan-buffer
    precision: str = ""  # "" -> high
    test_jobs: int = 0  # test processes at once; 0 -> the CPUs this process may use (a real GPU: GPU_TEST_JOBS)
    # An earlier ops session's results directory whose CPU cell (same MNN commit) is this session's CPU reference,
    # instead of running the CPU cell again (a GPU machine's time is the scarce one).
    cpu_from: Path | None = None
    # The Khronos validation layer on every Vulkan cell (issue 25, validation.py): off, on, or sync (adds the
    # layer's synchronization validation). The vulkan_validation session turns it on.
    vk_validation: str = "off"
    # Where MNN issued each VUID (validation_frames.py): one rerun under gdb with the layer's break action per VUID
    # of a validated cell. Its cost is a rerun per VUID, so it can be turned off; without gdb it is skipped.
    vk_attribution: bool = True
    # One slice of a session (issue 26, shard.py): of the ops session's selected tests, or of a training session's
    # GPU cells (`run SESSION --shard K/N`, with their CPU baselines). "K/N" (1-based K), "auto" (GitLab's
    # CI_NODE_INDEX/CI_NODE_TOTAL, read only then), "" for the whole. Checked before anything is built.
    shard: str = ""

    def describe(self) -> list[str]:
        return [f"{f.name} = {getattr(self, f.name)}" for f in fields(self)]


ENV_PREFIX = "MNNREPRO_"
_KEYS = {f.name for f in fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if name in ("source", "cache_dir", "results_dir", "host_ca", "cpu_from"):
            return Path(str(value)).expanduser() if value not in (None, "") else None
        if name in ("icds", "faults", "select", "variants"):
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            stripped = [str(i).strip() for i in items]
            if name == "icds" and any(not i for i in stripped) and any(stripped):
                raise ValueError  # "lavapipe,," or ",swiftshader": a typo, not a choice
            return tuple(i for i in stripped if i)
        if name in BOUNDS:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            number = int(value)
            lo, hi = BOUNDS[name]
            if not lo <= number <= hi:
                raise ConfigError(f"setting {name}={value!r} is out of range [{lo}, {hi}]")
            return number
        if name in ("gdb", "require_gdb", "clone", "keep_containers", "reuse", "vk_attribution"):
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            return text in ("1", "true", "yes", "on")
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}={value!r} is not a valid {kind}") from None


def _apply(settings: Settings, values: dict[str, Any], where: str) -> Settings:
    unknown = set(values) - _KEYS
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in {where}: {', '.join(sorted(unknown))}", hint=f"known: {', '.join(sorted(_KEYS))}"
        )
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    if coerced.get("cache_dir", 1) is None or coerced.get("results_dir", 1) is None:
        raise ConfigError(f"{where}: cache_dir/results_dir cannot be empty")
    return replace(settings, **coerced)


ICD_NAMES = KNOWN  # the rows of icd.TABLE: a new ICD is a row there
VK_VALIDATION_MODES = ("off", "on", "sync")  # validation.MODES (settings sits below it: no import)
# Bounds that keep a number meaningful end to end (the driver takes 32-bit step counts; a runner's time limit
# must fit a C int of milliseconds).
BOUNDS = {
    "steps": (0, 100_000),
    "jobs": (0, 1024),
    "repeat": (1, 1000),
    "timeout_s": (0, 7 * 86_400),
    "test_jobs": (0, 1024),
}


def _check_icds(icds: tuple[str, ...]) -> None:
    unknown = [i for i in icds if i not in ICD_NAMES]
    if unknown:
        raise ConfigError(
            f"unknown ICD(s): {', '.join(repr(u) for u in unknown)}", hint=f"choose from {', '.join(ICD_NAMES)}"
        )
    duplicated = sorted({i for i in icds if icds.count(i) > 1})
    if duplicated:
        raise ConfigError(
            f"ICD(s) named twice: {', '.join(duplicated)} (two cells would write one result directory)",
            hint="name each ICD once; --repeat N runs a cell several times",
        )


# 16 test processes at once on one H100 turned grad/unary and op/softmax (20 s each alone) into timeouts (issue
# 22): one GPU is shared by every test process, the CPUs are not what limits them. On a real GPU the default is at
# most this many; --test-jobs (MNNREPRO_TEST_JOBS) overrides it.
GPU_TEST_JOBS = 4


def real_gpu(settings: Settings) -> bool:
    """Cells run on this machine's GPU: its own Vulkan driver (--icd host) or OpenCL, outside Docker (containers
    get no GPU: there `host` is the image's lavapipe)."""
    return settings.runner != "docker" and ("host" in settings.icds or "opencl" in settings.variants)


def default_test_jobs(settings: Settings, cpus: int | None = None) -> int:
    """test_jobs when not set: the CPUs this process may use; on a real GPU at most GPU_TEST_JOBS."""
    cpus = cpus or len(os.sched_getaffinity(0))
    return min(GPU_TEST_JOBS, cpus) if real_gpu(settings) else cpus


def load(
    cli: dict[str, Any], *, environ: dict[str, str] | None = None, pyproject: Path = ROOT / "pyproject.toml"
) -> Settings:
    settings = Settings()
    if pyproject.is_file():
        try:
            table = tomllib.loads(pyproject.read_bytes().decode("utf-8")).get("tool", {}).get("mnnrepro", {})
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {pyproject}: {exc}", hint="fix the [tool.mnnrepro] table's syntax") from exc
        if not isinstance(table, dict):
            raise ConfigError(f"{pyproject}: [tool.mnnrepro] must be a table")
        settings = _apply(settings, table, f"{pyproject} [tool.mnnrepro]")
    env = os.environ if environ is None else environ
    from_env = {k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    # The suite's own variables, not settings.
    for internal in ("crash_dir", "it_refs", "container_as_root", "plant", "checkout"):
        from_env.pop(internal, None)
    settings = _apply(settings, from_env, "environment (MNNREPRO_*)")
    settings = _apply(settings, {k: v for k, v in cli.items() if v is not None}, "command line")
    validate(settings.faults)
    _check_icds(settings.icds)
    if settings.precision not in ("", "high", "normal", "low"):
        raise ConfigError(f"precision {settings.precision!r} is not one of high, normal, low")
    if settings.vk_validation not in VK_VALIDATION_MODES:
        raise ConfigError(
            f"vk_validation {settings.vk_validation!r} is not one of {', '.join(VK_VALIDATION_MODES)}",
            hint="--vk-validation on (the Khronos layer) or sync (with synchronization validation)",
        )
    if settings.runner not in ("auto", "host", "docker"):
        raise ConfigError(f"runner {settings.runner!r} is not one of auto, host, docker")
    if settings.test_jobs == 0 and real_gpu(settings):  # resolved here, so the printed settings say it
        settings = replace(settings, test_jobs=default_test_jobs(settings))
    return settings
