"""The driver's output contract, read in one place (written by native/src/*.cpp; see native/README.md).

events.jsonl: one JSON object per line, ``{"v": 1, "event": NAME, "t": seconds, ...}``. Stages are
written and flushed before each phase, so the last stage survives a crash.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_VERSION = 1

# Driver exit codes (native/src/options.hpp, enum ExitCode).
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_NOT_EXERCISED = 4
EXIT_NON_FINITE = 5
EXIT_OUTPUT = 6
EXIT_MNN_ERROR = 7
EXIT_MEANINGS = {
    EXIT_OK: "trained and evaluated",
    EXIT_USAGE: "bad command line",
    EXIT_DATA: "data rejected (IDX header/size/labels or init parameters)",
    EXIT_NOT_EXERCISED: "the requested backend was not the one MNN used",
    EXIT_NON_FINITE: "loss or prediction became NaN/Inf",
    EXIT_OUTPUT: "could not write its output",
    EXIT_MNN_ERROR: "an MNN call reported failure",
}


# PCI vendor IDs (and Khronos' own, VK_VENDOR_ID_*) as VkPhysicalDeviceProperties.vendorID gives them: the
# `vendor` of an expectation row is one of these names. Another ID is written 0xNNNN.
VENDORS = {
    0x1002: "AMD",
    0x1010: "Imagination",
    0x106B: "Apple",
    0x10DE: "NVIDIA",
    0x13B5: "ARM",
    0x1414: "Microsoft",
    0x14E4: "Broadcom",
    0x1AE0: "Google",  # SwiftShader
    0x5143: "Qualcomm",
    0x8086: "Intel",
    0x10005: "Mesa",  # VK_VENDOR_ID_MESA: lavapipe
}


@dataclass(frozen=True)
class Device:
    """The device a test ran on, as its own process probed it (the `backend` event's `device`: physical device 0
    of the Vulkan loader, or the first GPU-type OpenCL device). "" is unknown: a row that names a device, vendor or
    driver never matches it. Vulkan gives all three (the driver's version is VkPhysicalDeviceDriverProperties'
    driverInfo, "580.159.04" on NVIDIA, "Mesa 24.2.8 (LLVM 19.1.1)" on lavapipe); the OpenCL probe has the name
    only (no CL_DEVICE_VENDOR_ID, no CL_DRIVER_VERSION)."""

    name: str = ""
    vendor: str = ""
    driver: str = ""

    @property
    def known(self) -> bool:
        return bool(self.name)

    @classmethod
    def of_backend(cls, backend: dict[str, Any]) -> Device:
        probe = backend.get("device")
        if not isinstance(probe, dict):
            return cls()
        vendor_id = probe.get("vendor_id")
        vendor = ""
        if isinstance(vendor_id, int) and not isinstance(vendor_id, bool) and vendor_id > 0:
            vendor = VENDORS.get(vendor_id, f"0x{vendor_id:04x}")
        return cls(str(probe.get("name") or ""), vendor, str(probe.get("driver_info") or ""))

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "vendor": self.vendor, "driver": self.driver}


def device_fits(device: Device | None, name: str = "", vendor: str = "", driver: str = "") -> bool:
    """Whether a row's device, vendor and driver fnmatch patterns ("" : any) hold on ``device``: always when the row
    names none; never on an unknown device (None, or no name) or an unknown fact the row names (issue 22: a row
    learned on one GPU never claims another, nor a run whose device nobody knows)."""
    if not (name or vendor or driver):
        return True
    if device is None or not device.known:
        return False
    pairs = ((name, device.name), (vendor, device.vendor), (driver, device.driver))
    return all(not pattern or (fact and fnmatch.fnmatchcase(fact, pattern)) for pattern, fact in pairs)


class ContractError(ValueError):
    """events.jsonl is not what the driver promises (wrong version, not JSON)."""


@dataclass
class Stage:
    name: str
    step: int | None
    t: float

    def label(self) -> str:
        return self.name if self.step is None else f"{self.name}[step {self.step}]"


@dataclass
class RunRecord:
    """Everything the driver said about one run."""

    start: dict[str, Any] = field(default_factory=dict)
    backend: dict[str, Any] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    test: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)  # where each op ran, per step and phase
    canary: dict[str, Any] | None = None  # vk_canary: the validation layer's proof call (validation.py, issue 25)
    done: bool = False
    truncated_line: bool = False

    @property
    def last_stage(self) -> Stage | None:
        return self.stages[-1] if self.stages else None

    @property
    def exercised(self) -> bool | None:
        value = self.backend.get("exercised")
        return bool(value) if value is not None else None

    @property
    def device_name(self) -> str:
        device = self.backend.get("device") or {}
        return str(device.get("name") or "")

    @property
    def device(self) -> Device:
        """The device the run probed (name, vendor, driver): what a row's device keys are matched against."""
        return Device.of_backend(self.backend)

    @property
    def losses(self) -> list[float]:
        return [_as_float(s.get("loss")) for s in self.steps]

    def placement(self, step: int = 0) -> dict[str, dict[str, Any]]:
        """Per phase of one step: ops per backend, op types that ran on the CPU, backend switches."""
        out: dict[str, dict[str, Any]] = {}
        for event in self.ops:
            if event.get("step") != step:
                continue
            by = event.get("by_backend") or {}
            out[str(event.get("phase"))] = {
                "ops": {b: sum(types.values()) for b, types in by.items()},
                "cpu_ops": dict(sorted((by.get("cpu") or {}).items())),
                "backend_switches": event.get("backend_switches", 0),
            }
        return out

    @property
    def accuracy(self) -> float | None:
        return None if self.test is None else _as_float(self.test.get("accuracy"))


def _as_float(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return math.nan


def read_events(path: Path) -> RunRecord:
    """Parse events.jsonl. A missing file gives an empty record; a torn last line (crash mid-write) is noted."""
    record = RunRecord()
    if not path.exists():
        return record
    lines = path.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                record.truncated_line = True
                break
            raise ContractError(f"{path}:{number}: not JSON ({exc})") from exc
        if not isinstance(event, dict):
            raise ContractError(f"{path}:{number}: not a JSON object")
        if event.get("v") != EVENTS_VERSION:
            raise ContractError(f"{path}:{number}: events version {event.get('v')!r}, expected {EVENTS_VERSION}")
        kind = event.get("event")
        if kind == "start":
            record.start = event
        elif kind == "backend":
            record.backend = event
        elif kind == "stage":
            if not isinstance(event.get("name"), str):
                raise ContractError(f"{path}:{number}: stage event without a name")
            record.stages.append(Stage(event["name"], event.get("step"), float(event.get("t", 0.0))))
        elif kind == "step":
            record.steps.append(event)
        elif kind == "test":
            record.test = event
        elif kind == "error":
            record.error = event
        elif kind == "ops":
            record.ops.append(event)
        elif kind == "vk_canary" and record.canary is None:
            record.canary = event
        elif kind == "done":
            record.done = True
    return record
