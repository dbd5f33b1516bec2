"""A stand-in for native/'s mnist_driver, for the fault battery's quick tier (no MNN needed).

It speaks the driver's output contract (native/README.md) well enough for the whole session to judge it: the
``start`` event carries the golden's configuration, the gradient dumps are copies of the golden the session
passes with ``--init-params GOLDEN/init``, the losses are the golden's, so a clean run is green (PASS,
REPRODUCED, FIXED) and every planted fault is the only thing that differs.

What a cell does comes from the plan (``--fake-plan FILE``, put first by the wrapper fakerun.py writes), keyed by
"VARIANT/ICD" (the variant read from the plugin's directory name, the ICD from the manifest's file name):

  train          train every step, dump and finish (default for cpu and vulkan-buffer)
  crash          die of SIGSEGV entering sgd_step 0, as alibaba/MNN#3129 does in image mode (vulkan-image default)
  torn-crash     write half a crash.json into MNNREPRO_CRASH_DIR, then die of SIGSEGV in sgd_step 0
  zero-dump      train, but leave step0/grad/conv1.weight.npy zero bytes long
  bad-events     train, with a line that is not JSON in the middle of events.jsonl
  hang           stop at forward 1 and wait forever (a child sleeps beside it, in its process group)
  child          train, leaving a child process behind in its process group (the runner must reap it)
  data-error     exit 3 with an error event, as the driver does on a hostile input
  not-exercised  exit 4: the backend under test was not active
  libvulkan      not-exercised when the unversioned libvulkan.so is absent (the hide-libvulkan fault), else train

``step_s`` in the plan slows every step down (for signals at random moments). ``signal_session``: {"cell": KEY,
"step": N, "signum": 15, "group": false, "record": FILE}: that cell's driver signals the session that runs it (its
parent; its process group with "group", as a terminal's Ctrl-C) as it begins forward step N, notes the moment in
FILE, and goes on (the session must stop it).

Every step records where its ops ran (``ops`` events, native/README.md): on the backend under test, as MNN 3.3.0's
buffer mode places the Deconvolution of alibaba/MNN#3129 (the verdicts FIXED and FIXED-BY-FALLBACK read it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


class Events:
    def __init__(self, path: Path) -> None:
        self.start = time.monotonic()
        self.file = open(path, "w")

    def write(self, event_name: str, /, **fields: Any) -> None:
        event = {"v": 1, "event": event_name, "t": round(time.monotonic() - self.start, 6), **fields}
        self.file.write(json.dumps(event) + "\n")
        self.file.flush()

    def raw(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()


def options(argv: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    key = ""
    for arg in argv:
        if arg.startswith("--"):
            key = arg[2:]
            out[key] = ""
        elif key:
            out[key] = arg
            key = ""
    return out


def cell_key(opts: dict[str, str]) -> str:
    plugin = opts.get("plugin", "")
    variant = Path(plugin).parent.name if plugin else opts.get("backend", "cpu")
    manifest = os.environ.get("VK_ICD_FILENAMES", "")
    icd = Path(manifest).stem.removesuffix("_icd") if manifest else "-"
    return f"{variant}/{icd}"


FORWARD_OPS = {"Convolution": 2, "Pool": 2, "InnerProduct": 2}
SGD_OPS = {"Deconvolution": 1, "Convolution": 2, "BinaryOp": 2}  # the Deconvolution: alibaba/MNN#3129's op


def signal_session(spec: dict[str, Any] | None, key: str, step: int) -> None:
    """The planned signal to the session (this driver's parent), when this is the cell and step it names."""
    if not spec or spec.get("cell") != key or int(spec.get("step", 0)) != step:
        return
    signum, group = int(spec["signum"]), bool(spec.get("group"))
    phase = f"the driver of {key} at forward step {step}"
    Path(spec["record"]).write_text(json.dumps({"signum": signum, "group": group, "phase": phase, "at": time.time()}))
    session = os.getppid()
    if group:
        os.killpg(os.getpgid(session), signum)
    else:
        os.kill(session, signum)


def sigsegv() -> None:
    sys.stdout.flush()
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)


def main() -> int:
    argv = sys.argv[1:]
    plan: dict[str, Any] = {}
    if argv[:1] == ["--fake-plan"]:
        plan = json.loads(Path(argv[1]).read_text())
        argv = argv[2:]
    opts = options(argv)
    out = Path(opts["out"])
    out.mkdir(parents=True, exist_ok=True)
    key = cell_key(opts)
    variant = key.split("/")[0]
    default = "crash" if variant == "vulkan-image" else "train"
    behaviour = str(plan.get("cells", {}).get(key, default))
    step_s = float(plan.get("step_s", 0.0))
    steps = int(opts.get("steps", "3"))
    (out / "fake-env.json").write_text(json.dumps(dict(os.environ), indent=1))
    ev = Events(out / "events.jsonl")
    init = Path(opts["init-params"]) if opts.get("init-params") else None
    golden = init.parent if init is not None else None
    provenance: dict[str, Any] = json.loads((golden / "provenance.json").read_text()) if golden else {}
    config = dict(provenance.get("config") or {})
    config.update(
        backend=opts.get("backend"),
        steps=steps,
        test_limit=int(opts.get("test-limit", "0")),
        dump_steps=[s for s in opts.get("dump-steps", "").split(",") if s],
        init_params=opts.get("init-params", ""),
    )
    ev.write("start", driver="fake_driver", mnn_version="3.3.0", pid=os.getpid(), argv=argv, config=config)
    for stage in ("load_plugin", "probe_device", "configure_executor"):
        ev.write("stage", name=stage)
    backend = opts.get("backend", "cpu")
    if behaviour == "libvulkan":
        present = any(os.path.lexists(os.path.join(d, "libvulkan.so")) for d in LIB_DIRS)
        behaviour = "train" if present else "not-exercised"
    if behaviour == "not-exercised":
        reason = "fake driver: the Vulkan loader libvulkan.so could not be opened"
        ev.write("backend", requested=backend, active="cpu", exercised=False, reason=reason)
        ev.write("not_exercised", reason=reason)
        ev.write("error", kind="not_exercised", message=reason, exit_code=4)
        print(reason, file=sys.stderr)
        return 4
    device = {"name": "fake device", "driver_name": "fake"} if backend != "cpu" else {}
    ev.write("backend", requested=backend, active=backend, exercised=True, reason="", device=device)
    if behaviour == "data-error":
        message = f"{opts.get('data', '?')}/train-images-idx3-ubyte: truncated IDX header (fake)"
        ev.write("error", kind="data", message=message, exit_code=3)
        print(message, file=sys.stderr)
        return 3
    ev.write("stage", name="load_data")
    ev.write("data", train=2000, test=1000)
    ev.write("stage", name="build_model")
    losses = [float(x) for x in provenance.get("losses") or [2.29366136, 2.28728271]]
    dump_steps = {int(s) for s in config["dump_steps"]}
    on = "cpu" if backend == "cpu" else "vulkan"
    for step in range(steps):
        ev.write("stage", name="forward", step=step)
        signal_session(plan.get("signal_session"), key, step)
        if behaviour == "hang" and step == 1:
            subprocess.Popen(["sleep", "3600"])  # in the driver's process group: must go with it
            while True:
                time.sleep(3600)
        time.sleep(step_s)
        if step in dump_steps and golden is not None:
            ev.write("stage", name="grad_dump", step=step)
            dest = out / "grads" / f"step{step}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(golden / f"step{step}", dest)
            if behaviour == "zero-dump" and step == 0:
                (dest / "grad" / "conv1.weight.npy").write_bytes(b"")
        ev.write("stage", name="sgd_step", step=step)
        if step == 0 and behaviour in ("crash", "torn-crash"):
            if behaviour == "torn-crash":
                crash_dir = Path(os.environ.get("MNNREPRO_CRASH_DIR", str(out)))
                (crash_dir / "crash.json").write_text('{"format": 1, "signal": "SIGSEGV", "frames": [{"func')
            sigsegv()
        # Where the step's ops ran (the driver's `ops` event): the known bug's Deconvolution on the backend under
        # test, as buffer mode runs it (the judge reads its placement for FIXED vs FIXED-BY-FALLBACK).
        by_backend = {backend: {"Deconvolution": 1, "BinaryOp": 1}}
        ev.write("ops", phase="sgd_step", step=step, total=2, backend_switches=0, by_backend=by_backend)
        ev.write("ops", phase="forward", step=step, total=6, backend_switches=0, by_backend={on: FORWARD_OPS})
        ev.write("ops", phase="sgd_step", step=step, total=5, backend_switches=0, by_backend={on: SGD_OPS})
        loss = losses[step] if step < len(losses) else 2.30
        ev.write("step", step=step, loss=loss, lr=0.01, forward_ms=1.0, step_ms=1.0, first_index=step)
        if behaviour == "bad-events" and step == 0:
            ev.raw("this line is not JSON {")
    ev.write("stage", name="test")
    ev.write("test", correct=152, total=1000, accuracy=0.152, ms=1.0)
    if behaviour == "child":
        subprocess.Popen(["sleep", "3600"])  # left in the driver's process group when it exits
    ev.write("stage", name="done")
    ev.write("done", exit_code=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
