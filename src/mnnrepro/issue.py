"""An issue-ready Markdown report of one crash (issue 14): ``mnnrepro report --issue RESULTS_DIR``.

Reads only what a session wrote (summary.json of a training session or of the ops session; bisect.json of a
bisect, where given) and writes one file a maintainer can paste into an upstream issue: a one-line title, the
environment (MNN commit and the CMake flags that matter, compiler, Vulkan/OpenCL driver and device), the exact
commands to reproduce (the nox command, and MNN's own test binary where the crash is one of MNN's tests), the
crash signature and top frames, where the ops of the failing phase ran, and the bisect result when there is one.
Nothing of the machine it ran on: no paths (checked before writing), under MAX_LINES lines.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import validation, variants
from .build import CoreOptions
from .errors import ConfigError
from .judge import OFF_GPU, change_words
from .signature import SIGNAL_ONLY

MAX_LINES = 150
MAX_FRAMES = 12
MAX_OPS = 40  # rows of the reduced graph's table (a reduction the budget stopped early can be long)
# What a report may never contain: an absolute path of the machine it ran on.
_PATH = re.compile(r"(?<![\w.:/-])/(?:root|home|work|tmp|var|opt|usr|srv|mnt|check|cache|src|results)\b[^\s`|)]*")
# MNN's MNNForwardType values that upstream's run_test.out takes as its second argument.
_FORWARD_TYPE = {"cpu": 0, "opencl": 3, "vulkan": 7}
_PRECISION = {"normal": 0, "high": 1, "low": 2}  # BackendConfig::PrecisionMode
# The build options of the suite's core that decide which code runs (the rest only select what is built).
_CORE_FLAGS = ("-DCMAKE_BUILD_TYPE", "-DMNN_BUILD_TRAIN", "-DMNN_SEP_BUILD", "-DMNN_VULKAN", "-DMNN_OPENCL")


@dataclass
class Crash:
    """One crash, whichever session found it."""

    session: str
    ref: str
    commit: str
    variant: str
    icd: str
    signal: str
    where: str  # a stage of the training run, or an MNN test name
    signature: list[str]
    frames: list[str]
    device: str = ""
    driver: str = ""
    placement: dict[str, Any] = field(default_factory=dict)
    known: str = ""  # the upstream issue the expectation names, when the crash is a known one
    test: str = ""  # ops: the MNN test
    cell: str = ""
    toolchain: dict[str, str] = field(default_factory=dict)
    host: str = ""
    suite: str = ""
    workload: dict[str, Any] = field(default_factory=dict)
    precision: str = "high"
    cpu: str = ""  # the CPU backend's result of the same case in the same results (PASS, FAIL, ...; "" unknown)
    reduced: dict[str, Any] = field(default_factory=dict)  # a reduce session's summary (the reduced graph)
    signal_only: bool = False  # judged by the signal alone: no backtrace (no usable gdb where it ran)


def load(path: Path) -> dict[str, Any]:
    file = path / "summary.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}", hint="pass a results directory of a session") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file} is not a session summary")
    return data


def crashes(data: dict[str, Any], where: Path | None = None) -> list[Crash]:
    """Every crash of a session summary, GPU cells first in the order they ran. ``where``: the results directory
    as it is now (a reduce run's files are looked up there, also when the results were moved or archived)."""
    if data.get("session") == "ops":
        return _ops_crashes(data)
    if data.get("session") == "reduce":
        return [_reduce_crash(data, where)]
    if "cells" not in data or "header" not in data:
        raise ConfigError("not a summary.json of an mnnrepro session")
    h = data["header"]
    found = []
    for c in data["cells"]:
        ev = c.get("evidence") or {}
        if not ev.get("signal"):
            continue
        rh = (h.get("refs") or {}).get(c["ref"], h)
        expected = c.get("expected") == "REPRODUCED" and c.get("matched")
        found.append(
            Crash(
                session=str(h.get("session", "")),
                ref=c["ref"],
                commit=str(rh.get("commit") or ""),
                variant=c["variant"],
                icd=c.get("icd", "-"),
                signal=str(ev["signal"]),
                where=str(ev.get("stage") or "?"),
                signature=[str(s) for s in ev.get("signature") or []],
                frames=frames_from(Path(str(ev.get("result_dir") or "")) / "crash.json")
                or [str(f) for f in ev.get("top_frames") or []][:MAX_FRAMES],
                device=str(ev.get("device") or ""),
                driver=str(ev.get("driver") or ""),
                placement=c.get("placement") or {},
                known=_known(c.get("reason", "")) if expected else "",
                cell=c["cell"],
                toolchain=dict(rh.get("toolchain") or {}),
                host=str(h.get("host", "")),
                suite=str(h.get("suite", "")),
                workload=dict(h.get("workload") or {}),
                precision=str((h.get("workload") or {}).get("precision") or "high"),
                cpu=next(
                    (str(b["verdict"]) for b in data["cells"] if b["ref"] == c["ref"] and b["variant"] == "cpu"), ""
                ),
                signal_only=ev.get("signature") is None,  # the judge records None where no backtrace was taken
            )
        )
    return found


def _reduce_crash(data: dict[str, Any], where: Path | None) -> Crash:
    target = data.get("target") or {}
    keep = data.get("keep") or []
    work = where if where is not None else Path(str(data.get("results_dir", "")))
    data = {**data, "results_dir": str(work)}
    key = hashlib.sha256(",".join(map(str, sorted(keep))).encode()).hexdigest()[:16]
    checks = data.get("checks") or {}
    return Crash(
        session="reduce",
        ref=str(data.get("ref", "")),
        commit=str(data.get("commit", "")),
        variant=str(data.get("variant", "")),
        icd=str(data.get("icd", "-")),
        signal=str(target.get("signal") or "wrong outputs"),
        where=("the given graph" if data.get("graph") == "given" else "the first SGD step's gradient graph")
        + (f" of workload {data['workload']}" if data.get("workload") else "")  # issue 24: not MNIST's
        + f", reduced to {data.get('reduced_ops')} op(s)",
        signature=[str(x) for x in target.get("signature") or []],
        frames=frames_from(work / "candidates" / key / "crash.json") or [str(x) for x in target.get("signature") or []],
        device=str(data.get("device", "")),
        cell=f"{data.get('ref')}/{data.get('variant')}/{data.get('icd')}",
        toolchain=dict(data.get("toolchain") or {}),
        host=str(data.get("host", "")),
        suite=str(data.get("suite", "")),
        cpu="PASS" if checks.get("cpu") == "passes" else str(checks.get("cpu", "")),
        reduced=data,
        precision=str(data.get("precision") or "high"),
        known=str(target.get("bug") or ""),
        signal_only=target.get("kind", "crash") == "crash" and not data.get("gdb", True),
    )


def _known(reason: str) -> str:
    m = re.search(r"[\w.-]+/[\w.-]+#\d+", reason)
    return m.group(0) if m else ""


def _ops_crashes(data: dict[str, Any]) -> list[Crash]:
    found = []
    cpu = {
        t["test"]: str(t.get("status", ""))
        for c in data.get("cells", [])
        if c.get("variant") == "cpu"
        for t in c.get("tests", [])
    }
    for c in data.get("cells", []):
        for t in c.get("tests", []):
            if t.get("status") != "CRASH":
                continue
            signal = str(t.get("reason", "")).split(" ", 1)[0]
            found.append(
                Crash(
                    session="ops",
                    ref=str(data.get("ref", "")),
                    commit=str(data.get("commit", "")),
                    variant=c["variant"],
                    icd=c.get("icd", "-"),
                    signal=signal if signal.startswith("SIG") else "crash",
                    where=t["test"],
                    signature=[str(s) for s in t.get("signature") or []],
                    frames=_test_frames(t),
                    device=str(c.get("device") or ""),
                    placement={"test": {"ops": t.get("placement") or {}, "cpu_ops": t.get("cpu_ops") or {}}},
                    known=str(t.get("upstream") or ""),
                    test=t["test"],
                    cell=c["cell"],
                    toolchain=dict(data.get("toolchain") or {}),
                    host=str(data.get("host", "")),
                    suite=str(data.get("suite", "")),
                    precision=str(data.get("precision") or "high"),
                    cpu=cpu.get(t["test"], ""),
                )
            )
    return found


_TREE_DIRS = ("source/", "express/", "include/MNN/", "test/", "tools/", "transformers/", "3rd_party/", "native/")


def _where(file: str) -> str:
    """A frame's file relative to the MNN tree (or to mnnrepro, for its own native code); "" if neither."""
    for d in _TREE_DIRS:
        i = file.find(d)
        if i >= 0 and (i == 0 or file[i - 1] == "/"):
            return file[i:]
    return ""


def frames_from(crash_json: Path) -> list[str]:
    """``function (file:line)`` of the crashing thread's top frames, from a gdb capture's crash.json."""
    try:
        data = json.loads(crash_json.read_text())
    except (OSError, ValueError):
        return []
    frames = data.get("frames")
    if isinstance(frames, str):  # an older capture stored the list's repr
        try:
            frames = ast.literal_eval(frames)
        except (ValueError, SyntaxError):
            return []
    out = []
    for f in frames if isinstance(frames, list) else []:
        if not isinstance(f, dict):
            continue
        name = str(f.get("function") or "??")
        where = _where(str(f.get("file") or ""))
        out.append(f"{name} ({where}:{f.get('line')})" if where else name)
    return out[:MAX_FRAMES]


def _test_frames(t: dict[str, Any]) -> list[str]:
    """The top frames of a crashed MNN test: its gdb rerun's crash.json, beside its results."""
    directory = t.get("directory")
    for name in ("rerun/crash.json", "crash.json"):
        if directory and (frames := frames_from(Path(str(directory)) / name)):
            return frames
    return [str(s) for s in t.get("signature") or []]


def pick(found: list[Crash], *, cell: str | None = None, test: str | None = None) -> Crash:
    chosen = [c for c in found if (cell is None or c.cell == cell) and (test is None or c.test == test)]
    if not chosen:
        listed = ", ".join(sorted({c.cell + (f" {c.test}" if c.test else "") for c in found})) or "none"
        raise ConfigError(f"no crash matches (crashes in these results: {listed})")
    return chosen[0]


def _mode_flags(variant: str) -> list[str]:
    v = variants.get(variants.get(variant).build_as or variant)
    return list(v.cmake)


def cmake_flags(variant: str) -> list[str]:
    core = [d for d in CoreOptions().cmake_defines() if d.split("=", 1)[0] in _CORE_FLAGS]
    return [*core, *_mode_flags(variant)]


def _backend(variant: str) -> str:
    return variants.get(variant).backend


def _mode_words(variant: str) -> str:
    flags = " ".join(_mode_flags(variant))
    if "MNN_VULKAN_IMAGE=ON" in flags:
        return "Vulkan backend, image mode (`MNN_VULKAN_IMAGE=ON`, MNN's default)"
    if "MNN_VULKAN_IMAGE=OFF" in flags:
        return "Vulkan backend, buffer mode (`MNN_VULKAN_IMAGE=OFF`)"
    return f"{_backend(variant)} backend"


def title(c: Crash) -> str:
    top = c.signature[0] if c.signature else (c.frames[0] if c.frames else "?")
    if c.reduced:
        kinds = [str(r.get("type")) for r in c.reduced.get("ops") or []]
        source = "a training step" if c.reduced.get("graph") != "given" else "a given graph"
        source += f" of {c.reduced['workload']}" if c.reduced.get("workload") else ""
        what = f"{', '.join(kinds[:3])}{' ...' if len(kinds) > 3 else ''}: reduced from {source}"
    else:
        what = f"`{c.test}`" if c.test else f"training, {c.where}"
    mode = "image mode" if "IMAGE=ON" in " ".join(_mode_flags(c.variant)) else "buffer mode"
    backend = f"Vulkan {mode}" if _backend(c.variant) == "vulkan" else _backend(c.variant)
    if not c.signal.startswith("SIG"):  # a numerical bug: no crash, no frame
        return f"[{backend}] wrong outputs ({what}, MNN {c.ref})"
    if top == "?":  # no backtrace (no usable gdb where it ran)
        return f"[{backend}] {c.signal} ({what}, MNN {c.ref})"
    return f"[{backend}] {c.signal} in {top} ({what}, MNN {c.ref})"


def _nox(c: Crash) -> str:
    if c.session == "reduce":
        icd = f" --icd {c.icd}" if c.icd != "-" else ""
        given = "" if c.reduced.get("graph") != "given" else " --graph GRAPH_DIR"
        given += f" --workload {c.reduced['workload']}" if c.reduced.get("workload") else ""
        return f"nox -s reduce -- --ref {c.ref} --variant {c.variant}{icd}{given}"
    if c.session == "ops":
        icd = f" --icd {c.icd}" if c.icd != "-" else ""
        return f"nox -s ops -- --ref {c.ref} --variants {c.variant} --select {c.test}{icd}"
    icd = f" --icd {c.icd}" if c.icd != "-" else ""
    return f"nox -s {c.session} -- --ref {c.ref}{icd}"


def _upstream_commands(c: Crash) -> list[str]:
    """Building MNN and running the case without mnnrepro (MNN's own test binary for an MNN test)."""
    flags = " ".join(cmake_flags(c.variant))
    lines = [f"# in a checkout of MNN at {c.commit[:12] or c.ref}"]
    if c.reduced:
        plugin = " ../build/source/backend/vulkan/libMNN_Vulkan.so" if _backend(c.variant) == "vulkan" else ""
        lines.append(f"cmake -B build -G Ninja {flags}")
        lines.append("cmake --build build")
        lines.append("# repro/ (attached): repro.cpp, CMakeLists.txt, graph.mnn, inputs/, expected/")
        lines.append("cmake -S repro -B repro/build -DMNN_SOURCE_DIR=$PWD -DMNN_BUILD_DIR=$PWD/build")
        lines.append("cmake --build repro/build")
        lines.append(
            f"(cd repro && ./build/repro {_backend(c.variant)}{plugin or ' -'} {c.precision})   # {c.signal}; "
            "on cpu it passes"
        )
        fwd = _FORWARD_TYPE.get(_backend(c.variant), 0)
        sep = [f for f in cmake_flags(c.variant) if not f.startswith("-DMNN_SEP_BUILD")]
        lines.append(
            "# the same case as a test of MNN's own suite (MNN_SEP_BUILD=OFF: else run_test.out loads no backend)"
        )
        lines.append("cp repro/repro.cpp test/ReproReducedGraph.cpp")
        lines.append(f"cmake -B build-test -G Ninja {' '.join(sep)} -DMNN_SEP_BUILD=OFF -DMNN_BUILD_TEST=ON")
        lines.append("cmake --build build-test --target run_test.out")
        lines.append(
            f"(cd build-test && MNN_REPRO_DIR=../repro ./run_test.out repro/reduced_graph {fwd} "
            f"{_PRECISION.get(c.precision, 1)} 1)"
        )
        lines.append(f"# its log must say 'running the reduced graph on backend {fwd}' (else nothing was tested)")
    elif c.test:
        lines.append(f"cmake -B build -G Ninja {flags} -DMNN_BUILD_TEST=ON")
        lines.append("cmake --build build --target run_test.out")
        fwd = _FORWARD_TYPE.get(_backend(c.variant), 0)
        prec = _PRECISION.get(c.precision, 1)
        lines.append(f"cd build && ./run_test.out {c.test} {fwd} {prec} 1")
        lines.append(f"# upstream's runner matches by prefix (and runs every test whose name starts with {c.test}),")
        lines.append("# and quietly uses the CPU when the Vulkan runtime cannot be created: check the log says Vulkan")
    else:
        w = c.workload
        lines.append(f"cmake -B build -G Ninja {flags}")
        lines.append("cmake --build build")
        lines.append("# mnnrepro's MNIST training driver (native/ of mnnrepro), against that build:")
        plugin = "build/source/backend/vulkan/libMNN_Vulkan.so" if _backend(c.variant) == "vulkan" else ""
        lines.append(
            f"mnist_driver --backend {_backend(c.variant)} --data MNIST_DIR --out OUT --steps {w.get('steps', 30)} "
            f"--batch-size {w.get('batch_size', 64)} --seed {w.get('seed', 1)} --precision {c.precision}"
            + (f" --plugin {plugin}" if plugin else "")
        )
    return lines


def _placement(c: Crash) -> list[str]:
    rows = []
    for phase, p in sorted(c.placement.items()):
        ops = p.get("ops") or {}
        if not ops:
            continue
        cpu_ops = ", ".join(f"{k} x{v}" for k, v in sorted((p.get("cpu_ops") or {}).items()))
        where = ", ".join(f"{b}: {n}" for b, n in sorted(ops.items()))
        rows.append(f"| {phase} | {where} | {cpu_ops or '-'} |")
    if not rows:
        return ["No op placement was recorded before the crash."]
    return ["| phase | ops by backend | ops on the CPU |", "| --- | --- | --- |", *rows]


def _bisect(path: Path | None) -> list[str]:
    if path is None:
        return []
    file = path / "bisect.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    rng = data.get("range") or {}
    out = ["## Bisect", ""]

    def end(which: str) -> str:
        ref = rng.get(f"{which}_ref")
        commit, verdict = f"`{str(rng.get(which, '?'))[:12]}`", data.get(f"{which}_verdict")
        return f"{ref} ({commit}, {verdict})" if ref else f"{commit} ({verdict})"

    over = f" over {rng['commits']} first-parent commits" if rng.get("commits") else ""
    out.append(
        f"Between {end('old')} and {end('new')}{over}, cell `{data.get('cell')}`, "
        f"{len(data.get('steps') or [])} builds:"
    )
    if data.get("first"):
        old_v, new_v = str(data.get("old_verdict", "")), str(data.get("new_verdict", ""))
        change = data.get("change") or change_words(old_v, new_v, rng.get("kind", "regression") == "regression")
        out.append(f"the {change} is `{data['first']}` (parent `{data.get('parent')}`).")
        if new_v in OFF_GPU:
            out.append(f"From it on the op runs on the CPU ({new_v}): the GPU kernel is not fixed.")
        if data.get("subject"):
            out.append(f'Its subject: "{data["subject"]}" ({data.get("date", "")}).')
    elif data.get("candidates"):
        out.append("one of: " + ", ".join(f"`{c[:12]}`" for c in data["candidates"]) + " (some did not build).")
    if str(data.get("judged_by", "")).startswith(SIGNAL_ONLY) or str(data.get("cell", "")).endswith(
        ("/signal", "/signal/placement")
    ):
        out.append(f"Each commit's crash was {SIGNAL_ONLY} (no gdb).")
    return [*out, ""]


def _output_table(c: Crash) -> list[str]:
    """The reduced graph's outputs on the backend against the CPU's values (its run alone, verify/backend)."""
    if c.reduced is None:
        return []
    events = Path(str(c.reduced.get("results_dir", ""))) / "verify" / "backend" / "events.jsonl"
    rows = []
    try:
        lines = events.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "output" and "max_abs" in e:
            bad = f"{e.get('nonfinite', '?')} of {e.get('count', '?')}"
            rows.append(
                f"| `{e.get('name')}` | {e.get('dims')} | {bad} | {_num(e.get('max_abs'))} | {_num(e.get('max_rel'))} "
                f"| {_num(e.get('cosine'))} | {_num(e.get('nmse'))} | {'yes' if e.get('differs') else 'no'} |"
            )
    if not rows:
        return []
    head = "| output | dims | NaN/inf where the CPU is finite | max abs (finite) | max rel | cosine | nmse | differs |"
    return [head, "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "", *_where_wrong(c)]


def _where_wrong(c: Crash) -> list[str]:
    """Which values differ, from the standalone reproducer's own account (repro.cpp: "N of M values differ, flat
    indices I to J"): a kernel that leaves part of its output unwritten shows as a range (issue 22)."""
    said = str(((c.reduced or {}).get("checks") or {}).get("standalone_numbers") or "")
    ranges = [part.strip() for part in said.split(";") if " values differ, flat indices " in part]
    if not ranges:
        return []
    return ["Where, by the standalone reproducer (flat indices in NCHW order): " + "; ".join(ranges) + ".", ""]


def _num(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _cpu_sentence(c: Crash) -> str:
    case = "test" if c.test else "run"
    if c.cpu == "PASS":
        return f"The same {case} on the CPU backend of the same build passes."
    if c.cpu:
        return f"The same {case} on the CPU backend of the same build is {c.cpu} too: the bug may not be Vulkan's."
    return f"(These results have no CPU run of the same {case} to compare with.)"


def _reduced(r: dict[str, Any]) -> list[str]:
    out = ["## The reduced graph", ""]
    t = r.get("target") or {}
    if t.get("source"):
        out += [f"Target: {t.get('source')}" + (f", {t.get('stage')}" if t.get("stage") else "") + ".", ""]
    judged = f", {r['judged_by']}" if r.get("judged_by") else ""
    out.append(
        f"{r.get('original_ops')} ops -> {r.get('reduced_ops')}, {r.get('candidate_runs')} candidate runs (each in its"
        f" own process{', under gdb' if r.get('gdb', True) else ''}{judged}), {r.get('reduce_seconds')} s"
        f"{'' if not r.get('budget_exhausted') else ' (the time budget ran out: the best so far, not minimal)'}."
        " An input whose producer was cut away holds the value"
        " the CPU backend computed for it (an input, not a constant, so MNN picks the same kernel)."
    )
    out += ["", "| # | op | inputs | outputs |", "| --- | --- | --- | --- |"]
    rows = r.get("ops") or []
    for row in rows[:MAX_OPS]:
        ins = ", ".join(f"`{x}`" for x in row.get("inputs", []))
        outs = ", ".join(f"`{x}`" for x in row.get("outputs", []))
        out.append(f"| {row.get('index')} | {row.get('type')} | {ins} | {outs} |")
    if len(rows) > MAX_OPS:
        out.append(f"| ... | {len(rows) - MAX_OPS} more op(s): summary.json lists them all | | |")
    k = r.get("checks") or {}
    out += [
        "",
        f"Checked on its own: the reduced graph {k.get('backend')} on the GPU backend and {k.get('cpu')} on the CPU; "
        f"the standalone `repro.cpp` built {k.get('standalone_build')}, {k.get('standalone')} on the GPU backend "
        f"and {k.get('standalone_cpu')} on the CPU.",
        "",
    ]
    for check in sorted(Path(str(r.get("results_dir", ""))).glob("at-*/check.json")):
        try:
            at = json.loads(check.read_text())
        except (OSError, ValueError):
            continue
        ck = at.get("checks") or {}
        ran = at.get("placement", {}).get("backend") or {}
        where = "; ".join(
            f"{b}: {', '.join(f'{t} x{n}' for t, n in sorted(ops.items()))}" for b, ops in sorted(ran.items())
        )
        verdict = f"{at['verdict']}: " if at.get("verdict") else ""
        out += [
            f"At {at.get('ref')} (`{str(at.get('commit', ''))[:12]}`, {ck.get('device') or at.get('icd')}), "
            f"{verdict}on the GPU backend the same graph {_said(ck.get('backend'))} ({where or 'no op recorded'}); on "
            f"the CPU it {_said(ck.get('cpu'))}; the standalone reproducer {_said(ck.get('standalone'))}.",
            "",
        ]
    return out


def _said(check: object) -> str:
    """A check's word as a verb: "passes", "fails ...", and a FALLBACK ("FALLBACK (Deconvolution x1 on cpu)") as
    what it is: the op left the GPU, neither a pass nor the bug."""
    text = str(check or "gave no answer")
    return "falls back to the CPU" + text[len("FALLBACK") :] if text.startswith("FALLBACK") else text


def _environment(c: Crash) -> list[tuple[str, str]]:
    env = [
        ("MNN", f"{c.ref} (commit `{c.commit[:12] or '?'}`)"),
        ("backend", _mode_words(c.variant)),
        ("CMake flags that matter", "`" + " ".join(cmake_flags(c.variant)) + "`"),
    ]
    if c.toolchain.get("c++"):
        env.append(("compiler", c.toolchain["c++"]))
    if c.device or c.icd != "-":
        env.append(("device", ", ".join(x for x in (c.device, c.driver) if x) + f" (ICD: {c.icd})"))
    if c.host:
        env.append(("OS", c.host))
    if c.precision:
        env.append(("precision", f"BackendConfig precision {c.precision}"))
    return env


def _what_happens(c: Crash) -> list[str]:
    """The report's first paragraph: what fails, where, and what the CPU does."""
    lines: list[str] = []
    if c.reduced:
        lines.append(
            f"A graph of {c.reduced.get('reduced_ops')} op(s), cut by delta debugging from the "
            f"{c.reduced.get('original_ops')} ops of "
            + (
                f"{c.reduced.get('workload') or 'MNIST'} training's first SGD step (its gradient graph)"
                if c.reduced.get("graph") != "given"
                else "a given graph"
            )
            + (
                f", crashes with {c.signal}"
                if c.signal.startswith("SIG")
                else ", computes outputs that differ from the CPU's beyond the gradient-check limits"
            )
            + f" on the {_mode_words(c.variant)}."
        )
    elif c.test:
        lines.append(f"MNN's own test `{c.test}` crashes with {c.signal} on the {_mode_words(c.variant)}.")
    else:
        w = c.workload
        lines.append(
            f"Training (MNIST LeNet, {w.get('steps', '?')} SGD steps of batch {w.get('batch_size', '?')}) on the "
            f"{_mode_words(c.variant)} is killed by {c.signal} at `{c.where}`."
        )
    lines.append(_cpu_sentence(c))
    if c.known and c.signal_only:
        lines.append(f"The crash is that of {c.known} by its signal and stage: {SIGNAL_ONLY} (no gdb).")
    elif c.known:
        lines.append(f"The crash signature is that of {c.known}.")
    return lines


def render(c: Crash, *, bisect: Path | None = None) -> str:
    lines = [f"# {title(c)}", "", *_what_happens(c)]
    lines += ["", "## Environment", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in _environment(c)]
    lines += ["", "## To reproduce", "", "With mnnrepro (builds MNN in a container, runs the case, judges it):", ""]
    lines += ["```sh", _nox(c), "```", "", "With MNN alone:", "", "```sh", *_upstream_commands(c), "```", ""]
    if not c.signal.startswith("SIG"):
        lim = (c.reduced or {}).get("limits") or {}
        lines += [
            "## Wrong outputs",
            "",
            "No crash: outputs differ from the CPU backend's beyond "
            f"max_rel {lim.get('max_rel')}, cosine {lim.get('min_cosine')}, nmse {lim.get('max_nmse')}.",
            "",
            *_output_table(c),
        ]
    else:
        lines += ["## Crash", ""]
        if c.signal_only:
            row = " The signature below is the known bug's (fixtures/matrix.toml), not seen on this run."
            lines += [
                "Judged by signal only: no backtrace was taken where it ran (no usable gdb), so the crash was not "
                "held to a signature." + (row if c.signature else ""),
                "",
            ]
        if c.signature:
            lines += [f"{c.signal} in `{c.where}`. Signature (the top frames inside MNN):", "", "```", *c.signature]
            lines.append("```")
        elif c.frames and not c.signal_only:
            lines.append(f"{c.signal} in `{c.where}`, with no frame inside MNN's libraries at the top of the stack.")
        else:
            lines.append(f"{c.signal} in `{c.where}`; no backtrace was taken (no usable gdb where it ran).")
        if c.frames and not (c.signal_only and c.reduced):  # a reduction without gdb has only the row's names
            lines += ["", "Top frames:", "", "```", *c.frames, "```"]
        lines.append("")
    if c.reduced:
        lines += _reduced(c.reduced)
    else:
        lines += ["## Where the ops ran", "", *_placement(c), ""]
    lines += _bisect(bisect)
    lines.append(f"_Found by mnnrepro {c.suite} ({c.session} session, cell `{c.cell}`)._")
    text = "\n".join(lines) + "\n"
    if leaked := _PATH.findall(text):
        raise ConfigError(f"the report would contain a path of this machine: {leaked[0]}")
    if text.count("\n") > MAX_LINES:
        raise ConfigError(f"the report is {text.count(chr(10))} lines, over {MAX_LINES}")
    return text


# -- a validation finding (issue 25) ---------------------------------------------------------------------------
_SPEC_SAYS = re.compile(r"The Vulkan spec states: (?P<text>.*?)(?: \((?P<url>https://[^\s)]+)\))?\s*$", re.S)


@dataclass
class VuidFinding:
    """One VUID of a validated Vulkan run: a training cell's validation.json record, or a VUID reduction."""

    vuid: str
    count: int
    severity: str
    first: str  # the layer's first message for it (the object handles taken out)
    frames: list[str] | None  # MNN frames of the attribution rerun; None: not attributed
    mode: str
    session: str
    ref: str
    commit: str
    variant: str
    icd: str
    cell: str
    device: str = ""
    driver: str = ""
    toolchain: dict[str, str] = field(default_factory=dict)
    host: str = ""
    suite: str = ""
    workload: dict[str, Any] = field(default_factory=dict)
    listed: str = ""  # "listed" (a row of fixtures/validation.toml), "NEW" (a finding), "" unknown
    reduced: dict[str, Any] = field(default_factory=dict)  # a VUID reduction's summary


def spec_text(message: str) -> tuple[str, str]:
    """The part of a layer message that quotes the spec ("The Vulkan spec states: ..."), and the spec's URL."""
    m = _SPEC_SAYS.search(message)
    return (m["text"].strip(), m["url"] or "") if m else ("", "")


def vuid_findings(data: dict[str, Any]) -> list[VuidFinding]:
    """Every VUID of a session summary: each validated cell's record (training sessions), or the reduced graph's
    VUIDs of a VUID reduction (reduce --vuid). A cell whose layer was not shown loaded has none."""
    if data.get("session") == "reduce":
        return _reduce_vuids(data)
    if data.get("session") == "ops":  # its VUIDs are per test (cells[].validation): no report of them yet
        raise ConfigError(
            "report --issue --vuid takes a training session's or a `reduce --vuid` run's results; MNN's own tests' "
            "VUIDs (ops run --vk-validation) are not written up yet",
            hint="reduce it first: python -m mnnrepro reduce --vuid VUID ..., then report --issue on that run",
        )
    if "cells" not in data or "header" not in data:
        raise ConfigError("not a summary.json of an mnnrepro session")
    h = data["header"]
    found = []
    for c in data["cells"]:
        ev = c.get("evidence") or {}
        record = ev.get("validation") or {}
        if record.get("status") != "EXERCISED":
            continue
        rh = (h.get("refs") or {}).get(c["ref"], h)
        new = set(record.get("findings") or [])
        for vuid, info in (record.get("vuids") or {}).items():
            found.append(
                VuidFinding(
                    **_layer_says(vuid, info),
                    mode=str(record.get("mode", "on")),
                    session=str(h.get("session", "")),
                    ref=c["ref"],
                    commit=str(rh.get("commit") or ""),
                    variant=c["variant"],
                    icd=c.get("icd", "-"),
                    cell=c["cell"],
                    device=str(ev.get("device") or ""),
                    driver=str(ev.get("driver") or ""),
                    toolchain=dict(rh.get("toolchain") or {}),
                    host=str(h.get("host", "")),
                    suite=str(h.get("suite", "")),
                    workload=dict(h.get("workload") or {}),
                    listed="NEW" if vuid in new else "listed",
                )
            )
    return found


def _layer_says(vuid: str, info: dict[str, Any]) -> dict[str, Any]:
    """A VUID's entry of a validation record (training cell or reduced graph) as VuidFinding's fields: its count,
    severity, first message and, where attributed, MNN's frames (None: no attribution)."""
    return {
        "vuid": vuid,
        "count": int(info.get("count", 0)),
        "severity": str(info.get("severity", "")),
        "first": str(info.get("first", "")),
        "frames": [str(f) for f in info["frames"]] if info.get("frames") else None,
    }


def _reduce_vuids(data: dict[str, Any]) -> list[VuidFinding]:
    entry = data.get("vuid") or {}
    if (data.get("target") or {}).get("kind") != "vuid" or not entry:
        raise ConfigError("these reduce results reduce a crash or wrong values, not a VUID", hint="omit --vuid")
    return [
        VuidFinding(
            **_layer_says(vuid, info),
            mode=str(entry.get("mode", "on")),
            session="reduce",
            ref=str(data.get("ref", "")),
            commit=str(data.get("commit", "")),
            variant=str(data.get("variant", "")),
            icd=str(data.get("icd", "-")),
            cell=f"{data.get('ref')}/{data.get('variant')}/{data.get('icd')}",
            device=str(data.get("device", "")),
            toolchain=dict(data.get("toolchain") or {}),
            host=str(data.get("host", "")),
            suite=str(data.get("suite", "")),
            reduced=data,
        )
        for vuid, info in (entry.get("reduced") or {}).items()
    ]


def pick_vuid(found: list[VuidFinding], *, vuid: str | None = None, cell: str | None = None) -> VuidFinding:
    """The finding named by ``vuid`` (exact or an fnmatch pattern) and ``cell``; by default the first, findings
    (VUIDs no row of fixtures/validation.toml lists) before listed ones."""
    chosen = [
        f
        for f in sorted(found, key=lambda f: f.listed != "NEW")
        if (vuid is None or fnmatch.fnmatchcase(f.vuid, vuid)) and (cell is None or f.cell == cell)
    ]
    if not chosen:
        listed = ", ".join(sorted({f"{f.cell} {f.vuid}" for f in found})) or "none (no cell shown validated)"
        raise ConfigError(f"no VUID matches (in these results: {listed})")
    return chosen[0]


def _vuid_title(f: VuidFinding) -> str:
    mode = "image mode" if "IMAGE=ON" in " ".join(_mode_flags(f.variant)) else "buffer mode"
    if f.reduced:
        kinds = [str(r.get("type")) for r in f.reduced.get("ops") or []]
        what = f"{', '.join(kinds[:3])}{' ...' if len(kinds) > 3 else ''}: reduced from a training step"
    else:
        what = f"{f.workload.get('name') or 'MNIST'} training"
    return f"[Vulkan {mode}] validation error {f.vuid} ({what}, MNN {f.ref})"


def _vuid_where(f: VuidFinding) -> str:
    if f.reduced:
        r = f.reduced
        return (
            f"a graph of {r.get('reduced_ops')} op(s), cut by delta debugging from the {r.get('original_ops')} ops of "
            f"{r.get('workload') or 'MNIST'} training's first SGD step (its gradient graph), each candidate run under "
            "the layer"
        )
    w = f.workload
    return f"MNIST training ({w.get('steps', '?')} SGD steps of batch {w.get('batch_size', '?')})"


def _layer_settings(mode: str) -> list[str]:
    """The layer's settings file of the suite (validation.py), logging to stdout: a log file is truncated at every
    vkCreateInstance, and MNN creates several."""
    return [x for x in validation.settings_text(Path("-"), mode).splitlines() if ".log_filename" not in x]


def _vuid_commands(f: VuidFinding) -> list[str]:
    """The suite's commands, then MNN alone under the layer (the reduced graph's standalone reproducer, or the
    training driver)."""
    icd = f" --icd {f.icd}" if f.icd != "-" else ""
    suite = [f"nox -s vulkan_validation -- --ref {f.ref}{icd}"]
    suite.append(f"python -m mnnrepro reduce --ref {f.ref} --variant {f.variant}{icd} --runner host --vuid '{f.vuid}'")
    suite.append("python -m mnnrepro report --issue RESULTS_DIR" + ("" if f.reduced else f" --vuid '{f.vuid}'"))
    alone = [f"# in a checkout of MNN at {f.commit[:12] or f.ref}"]
    alone += [f"cmake -B build -G Ninja {' '.join(cmake_flags(f.variant))}", "cmake --build build"]
    alone.append("# the Khronos validation layer (Debian: vulkan-validationlayers), its settings file:")
    alone.append("printf '%s\\n' " + " ".join(f"'{x}'" for x in _layer_settings(f.mode)) + " > vk_layer_settings.txt")
    alone.append(
        "export VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation VK_LAYER_SETTINGS_PATH=$PWD/vk_layer_settings.txt"
    )
    plugin = "build/source/backend/vulkan/libMNN_Vulkan.so"
    if f.reduced:
        alone.append("# repro/ (attached): repro.cpp, CMakeLists.txt, graph.mnn, inputs/, expected/")
        alone.append("cmake -S repro -B repro/build -DMNN_SOURCE_DIR=$PWD -DMNN_BUILD_DIR=$PWD/build")
        alone.append("cmake --build repro/build")
        alone.append(
            f"(cd repro && ./build/repro vulkan ../{plugin} {f.reduced.get('precision') or 'high'}) "
            f"| grep -c '^{f.vuid}('"
        )
    else:
        w = f.workload
        alone.append("# mnnrepro's MNIST training driver (native/ of mnnrepro), against that build:")
        alone.append(
            f"mnist_driver --backend vulkan --data MNIST_DIR --out OUT --steps {w.get('steps', 30)} "
            f"--batch-size {w.get('batch_size', 64)} --seed {w.get('seed', 1)} --plugin {plugin} | grep -c '^{f.vuid}('"
        )
    alone.append(f"# with the Vulkan driver of ICD {f.icd} first in the loader's list (VK_ICD_FILENAMES)")
    return [*suite, "```", "", "With MNN alone:", "", "```sh", *alone]


def _vuid_reduced(r: dict[str, Any], f: VuidFinding) -> list[str]:
    entry = r.get("vuid") or {}
    out = ["## The reduced graph", ""]
    start = entry.get("searched_from_ops")
    if start and start != r.get("original_ops"):
        out += [
            f"The whole graph crashed before the layer said anything; the search started from its longest prefix "
            f"that does not crash ({start} ops, {sum((entry.get('searched_from') or {}).values())} message(s)).",
            "",
        ]
    out.append(
        f"{r.get('original_ops')} ops -> {r.get('reduced_ops')}, {r.get('candidate_runs')} candidate runs (each in its "
        f"own process, under the layer, {r.get('judged_by')}), {r.get('reduce_seconds')} s"
        f"{'' if not r.get('budget_exhausted') else ' (the time budget ran out: the best so far, not minimal)'}."
    )
    if entry.get("op_specific") is False:  # the VUID shows with other single ops too (reduce/session.op_specific)
        out += [
            "",
            "The VUID also shows with another op of the graph alone: it comes from setup (instance, device or pipeline "
            "creation) or from every kernel, so the op below is where the search stopped, not the VUID's own.",
        ]
    out += ["", "| # | op | inputs | outputs |", "| --- | --- | --- | --- |"]
    for row in (r.get("ops") or [])[:MAX_OPS]:
        ins = ", ".join(f"`{x}`" for x in row.get("inputs", []))
        outs = ", ".join(f"`{x}`" for x in row.get("outputs", []))
        out.append(f"| {row.get('index')} | {row.get('type')} | {ins} | {outs} |")
    k = r.get("checks") or {}
    words = {"fails": f"reports {f.vuid}", "passes": f"does not report {f.vuid}"}
    out += [
        "",
        f"Checked on its own under the layer: the reduced graph {words.get(k.get('backend', ''), k.get('backend'))} "
        f"on the GPU backend (its canary reported); the standalone `repro.cpp` built {k.get('standalone_build')} and "
        f"{words.get(k.get('standalone', ''), k.get('standalone'))}; on the CPU the graph {k.get('cpu')} and "
        f"`repro.cpp` {k.get('standalone_cpu')} (outputs against the CPU's values).",
    ]
    if k.get("off_backend"):
        out.append(
            f"Not every op of it ran on the GPU ({k['off_backend']}): the layer's message comes from a Vulkan call at "
            "the boundary (the copy of a CPU result into a Vulkan tensor) or from the ops that did run there."
        )
    other = entry.get("reduced_other") or {}
    if other:
        out.append("The same run's other messages: " + ", ".join(f"`{v}` x{n}" for v, n in other.items()) + ".")
    return [*out, ""]


def render_vuid(f: VuidFinding) -> str:
    """An upstream-ready report of one VUID: what reports it where, the spec's words, the MNN frames, the
    environment, and the commands (the suite's, then MNN alone under the layer)."""
    said, url = spec_text(f.first)
    listed = {"NEW": " No row of the suite's known VUIDs lists it (a new finding).", "listed": ""}.get(f.listed, "")
    lines = [f"# {_vuid_title(f)}", ""]
    lines.append(
        f"Khronos' validation layer reports `{f.vuid}` ({f.severity or '?'}) {f.count} time(s) in {_vuid_where(f)}, "
        f"on the {_mode_words(f.variant)}.{listed} A software driver runs through it; a phone's driver may not."
    )
    lines += ["", "## What the layer says", ""]
    lines += [f"> The Vulkan spec states: {said}", ">", f"> {url}"] if said else ["(no spec text in the message)"]
    lines += ["", "First message:", "", "```", f.first, "```", "", "## Where MNN issues it", ""]
    if f.frames:
        lines += ["Top frames inside MNN (the layer's break action under gdb, other messages muted):", "", "```"]
        lines += [*f.frames[:MAX_FRAMES], "```"]
    else:
        lines.append("Not attributed (these results hold no attribution rerun for this VUID).")
    lines += ["", "## Environment", "", "| | |", "| --- | --- |"]
    env = [
        ("MNN", f"{f.ref} (commit `{f.commit[:12] or '?'}`)"),
        ("backend", _mode_words(f.variant)),
        ("CMake flags that matter", "`" + " ".join(cmake_flags(f.variant)) + "`"),
        ("compiler", f.toolchain.get("c++", "")),
        ("device", ", ".join(x for x in (f.device, f.driver) if x) + f" (ICD: {f.icd})"),
        ("validation", f"Khronos validation layer, mode {f.mode} (`--vk-validation {f.mode}`)"),
        ("OS", f.host),
    ]
    lines += [f"| {k} | {v} |" for k, v in env if v]
    lines += ["", "## To reproduce", "", "With mnnrepro:", "", "```sh", *_vuid_commands(f), "```", ""]
    if f.reduced:
        lines += _vuid_reduced(f.reduced, f)
    lines.append(f"_Found by mnnrepro {f.suite} ({f.session} session, cell `{f.cell}`)._")
    text = "\n".join(lines) + "\n"
    if leaked := _PATH.findall(text):
        raise ConfigError(f"the report would contain a path of this machine: {leaked[0]}")
    if text.count("\n") > MAX_LINES:
        raise ConfigError(f"the report is {text.count(chr(10))} lines, over {MAX_LINES}")
    return text
