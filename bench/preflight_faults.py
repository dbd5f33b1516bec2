#!/usr/bin/env python3
"""Environment faults that must stop a run before any build, in under 10 seconds, with their fix (first contact).

Each case plants one fault for one `python -m mnnrepro run vulkan_buffer` (host runner unless it is about
Docker), in a private mount namespace where it hides a file (needs root and util-linux `unshare`), and checks:
non-zero exit, under 10 s, no build started, and the message names the problem and a fix. Prints one table and
writes bench/preflight_faults.json. Usage: python3 bench/preflight_faults.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBDIR = "/usr/lib/x86_64-linux-gnu"
LIMIT_S = 10.0


def _suite(*args: str) -> list[str]:
    return [sys.executable, "-m", "mnnrepro", "run", "vulkan_buffer", *args]


def cases(work: Path) -> list[tuple[str, list[str], dict[str, str], str]]:
    """(fault, argv, extra environment, text the message must contain)."""
    nogdb = work / "bin-without-gdb"
    nogdb.mkdir()
    for exe in Path("/usr/bin").iterdir():
        if exe.name != "gdb":
            (nogdb / exe.name).symlink_to(exe)
    nodocker = work / "venv-without-docker-sdk"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(nodocker)], check=True)
    # A venv that hides the Docker SDK: a sitecustomize that makes `import docker` find nothing but the repo's
    # docker/ folder (what a user without the SDK gets).
    site = next(nodocker.glob("lib/python3*/site-packages"))
    (site / "sitecustomize.py").write_text(
        "import sys\nclass _NoSdk:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'docker' or name.startswith('docker.'):\n"
        "            import importlib.machinery as m\n"
        "            return m.PathFinder.find_spec(name, [p for p in sys.path if 'site-packages' not in p])\n"
        "        return None\nsys.meta_path.insert(0, _NoSdk())\n"
    )
    hide_lavapipe = "mount -t tmpfs none /usr/share/vulkan/icd.d"
    upper, wdir = work / "upper", work / "ovl-work"
    upper.mkdir()
    wdir.mkdir()
    hide_libvulkan = (
        f"mknod {upper}/libvulkan.so c 0 0 && "
        f"mount -t overlay overlay -o lowerdir={LIBDIR},upperdir={upper},workdir={wdir} {LIBDIR}"
    )
    host = ["--runner", "host"]
    return [
        ("bad ICD name (--icd nvidia)", _suite(*host, "--icd", "nvidia"), {}, "unknown ICD"),
        ("empty ICD list (--icd ,)", _suite(*host, "--icd", ","), {}, "no Vulkan ICD"),
        ("duplicated ICD (--icd lavapipe,lavapipe)", _suite(*host, "--icd", "lavapipe,lavapipe"), {}, "named twice"),
        (
            "Mesa lavapipe not installed",
            ["unshare", "-m", "sh", "-c", f'{hide_lavapipe} && exec "$@"', "sh", *_suite(*host, "--icd", "lavapipe")],
            {},
            "mesa-vulkan-drivers",
        ),
        (
            "SwiftShader not cached and its registry unreachable",
            _suite(*host, "--icd", "swiftshader", "--cache-dir", str(work / "empty-cache")),
            {"NPM_CONFIG_REGISTRY": "http://127.0.0.1:9/"},
            "SwiftShader",
        ),
        # Without gdb a run goes on (crashes judged by signal only, issue 22); it stops only where gdb is required.
        (
            "gdb not installed, gdb required (CI)",
            _suite(*host, "--icd", "lavapipe"),
            {"PATH": str(nogdb), "MNNREPRO_REQUIRE_GDB": "1"},
            "MNNREPRO_REQUIRE_GDB",
        ),
        (
            "unversioned libvulkan.so missing",
            ["unshare", "-m", "sh", "-c", f'{hide_libvulkan} && exec "$@"', "sh", *_suite(*host, "--icd", "lavapipe")],
            {},
            "libvulkan-dev",
        ),
        (
            "Docker SDK not installed",
            [str(nodocker / "bin" / "python"), *_suite("--runner", "docker", "--icd", "lavapipe")[1:]],
            {},
            "pip install docker",
        ),
        (
            "no Docker engine answers",
            _suite("--runner", "docker", "--icd", "lavapipe"),
            {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
            "dockerd",
        ),
    ]


def main() -> int:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        print("needs root and unshare (util-linux)", file=sys.stderr)
        return 2
    rows = []
    bad = 0
    with tempfile.TemporaryDirectory(prefix="preflight-faults-") as tmp:
        work = Path(tmp)
        for fault, argv, extra, needle in cases(work):
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **extra}
            results = work / "results" / str(len(rows))
            start = time.monotonic()
            res = subprocess.run(
                [*argv, "--results-dir", str(results)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
            )
            seconds = time.monotonic() - start
            out = res.stdout + res.stderr
            built = "building MNN core" in out or "building native/" in out or "plugin build" in out
            message = next((ln.strip() for ln in out.splitlines() if "mnnrepro:" in ln), out.strip()[-160:])
            fix = next((ln.strip() for ln in out.splitlines() if "what to do:" in ln), "")
            ok = res.returncode != 0 and seconds < LIMIT_S and not built and needle.lower() in out.lower()
            bad += not ok
            rows.append(
                {
                    "fault": fault,
                    "exit": res.returncode,
                    "seconds": round(seconds, 1),
                    "build_started": built,
                    "results_dir_made": results.exists(),
                    "message": message[:300],
                    "fix": fix[:300],
                    "ok": ok,
                }
            )
            print(f"{'ok ' if ok else 'BAD'} {fault}: exit {res.returncode} in {seconds:.1f}s; {message[:140]}")
            if fix:
                print(f"    {fix[:200]}")
    (ROOT / "bench" / "preflight_faults.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\n{len(rows) - bad}/{len(rows)} faults stopped before any build in < {LIMIT_S:.0f} s with their fix")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
