#!/usr/bin/env python3
"""The README's first two commands, copied verbatim from README.md, on a fresh Debian 12 machine; timed.

A "fresh machine" is a container of the bootstrapped Debian 12 base (`mnnrepro image bootstrap`) holding only
python3, python3-venv, git, ca-certificates and this machine's package-registry settings (apt sources and
options, pip configuration, the CA bundle), with a clean clone of this repository's HEAD at the same path as on
the host. Two kinds:

- ``--runner docker``: the host's Docker socket is mounted, and the clone and a fresh cache directory (the
  container's $HOME) sit at the same paths as on the host, so the suite's same-path mounts hold.
- ``--runner host``: no socket. Command 1 stops in the preflight, which prints one `apt-get install` line; this
  script runs that line as printed (nothing else), then the README's commands again.

MNN cannot be cloned from GitHub on these machines: the refs the suite needs are put into the fresh cache with
`mnnrepro source import --git-dir MIRROR` first (the README's offline route), and the script says so.
Results: a table of step, exit code and seconds, and bench/fresh_machine-<runner>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = "mnnrepro/debian:bookworm-bootstrap"
PACKAGES = "python3 python3-venv git ca-certificates"
# The package-registry settings of this machine, mounted read-only where they exist.
REGISTRY_FILES = (
    "/etc/apt/sources.list.d/debian.sources",
    "/etc/apt/apt.conf.d/99artifact-registry",
    "/etc/pip.conf",
    "/etc/xdg/pip",
    "/usr/local/share/ca-certificates",
)


def readme_commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The first ```sh block of the README, one command per line, comments stripped."""
    m = re.search(r"```sh\n(.*?)```", readme.read_text(), re.S)
    if not m:
        raise SystemExit("README.md has no ```sh block")
    out = []
    for line in m.group(1).splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        if command:
            out.append(command)
    return out


def sh(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, text=True, **kw)  # type: ignore[call-overload, no-any-return]


class Fresh:
    def __init__(self, runner: str, work: Path, home: Path | None = None) -> None:
        self.runner = runner
        self.work = work
        self.clone = work / "mnnrepro"
        self.home = home or work / "home"
        self.name = f"mnnrepro-fresh-{uuid.uuid4().hex[:8]}"
        self.log = work / "log.txt"
        self.rows: list[dict[str, object]] = []

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        sh(["git", "clone", "-q", str(ROOT), str(self.clone)], check=True)
        # Same paths inside and out (the Docker runner mounts the paths the suite names): the clone, $HOME (the
        # cache) and the temporary directory (pytest's tmp_path, where the integration tests put their results).
        self.tmp = self.work / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        mounts = [f"{self.clone}:{self.clone}", f"{self.home}:{self.home}", f"{self.tmp}:{self.tmp}"]
        mounts += [f"{p}:{p}:ro" for p in REGISTRY_FILES if Path(p).exists()]
        args = ["docker", "run", "-d", "--name", self.name, "--label", "mnnrepro.fresh=1", "-e", f"HOME={self.home}"]
        args += ["-e", f"TMPDIR={self.tmp}"]
        if self.runner == "docker":
            mounts.append("/var/run/docker.sock:/var/run/docker.sock")
        else:  # gdb in the host runner needs ptrace
            args += ["--cap-add", "SYS_PTRACE", "--security-opt", "seccomp=unconfined"]
        for m in mounts:
            args += ["-v", m]
        sh([*args, "-w", str(self.clone), BASE, "sleep", "infinity"], check=True, capture_output=True)

    def run(self, step: str, command: str, *, timeout_s: float = 5400) -> tuple[int, str]:
        print(f"\n=== {step}: {command}", flush=True)
        start = time.monotonic()
        with open(self.log, "a") as log:
            log.write(f"\n=== {step}: {command}\n")
            log.flush()
            proc = subprocess.Popen(
                ["docker", "exec", "-w", str(self.clone), self.name, "bash", "-c", command],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                print(line, end="", flush=True)
            rc = proc.wait(timeout=timeout_s)
        seconds = round(time.monotonic() - start, 1)
        self.rows.append({"step": step, "command": command, "rc": rc, "seconds": seconds})
        return rc, "".join(lines)

    def stop(self) -> None:
        sh(["docker", "rm", "-f", self.name], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runner", choices=["docker", "host"], required=True)
    ap.add_argument("--git-dir", default="/work/.mirror/alibaba+MNN/repo", help="MNN repository to import refs from")
    ap.add_argument("--refs", default="", help="refs to import (default: the ci tier of fixtures/matrix.toml)")
    ap.add_argument("--work", type=Path, default=None, help="work dir (default /tmp/mnnrepro-fresh-<id>)")
    ap.add_argument("--keep", action="store_true", help="keep the container")
    ap.add_argument("--home", type=Path, help="reuse this $HOME (its MNN build cache) instead of a fresh one")
    args = ap.parse_args()
    work = args.work or Path(f"/tmp/mnnrepro-fresh-{uuid.uuid4().hex[:6]}")
    fresh = Fresh(args.runner, work, args.home)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    refs = args.refs.split(",") if args.refs else None
    if refs is None:
        listed = sh(
            [sys.executable, "-m", "mnnrepro", "matrix", "--tier", "ci"], capture_output=True, env=env, check=True
        )
        refs = [line.split("\t")[0] for line in listed.stdout.splitlines() if line]
    commands = readme_commands()
    print(f"fresh machine ({args.runner} runner) in {work}; README commands: {commands}")
    fresh.start()
    try:
        t0 = time.monotonic()
        fresh.run("base packages", f"apt-get update -qq && apt-get install -y -qq --no-install-recommends {PACKAGES}")
        cache = fresh.home / ".cache" / "mnnrepro"
        for ref in refs:  # GitHub is unreachable here: the README's offline route, from the host
            start = time.monotonic()
            sh(
                [
                    sys.executable,
                    "-m",
                    "mnnrepro",
                    "source",
                    "import",
                    "--git-dir",
                    args.git_dir,
                    "--ref",
                    ref,
                    "--cache-dir",
                    str(cache),
                ],
                check=True,
                env=env,
                capture_output=True,
            )
            fresh.rows.append(
                {
                    "step": f"source import {ref} (host, offline route)",
                    "rc": 0,
                    "seconds": round(time.monotonic() - start, 1),
                }
            )
        rc, out = fresh.run("README command 1", commands[0])
        if rc != 0 and args.runner == "host":
            m = re.search(r"what to do: (apt-get install [^;\n]+)", out)
            if not m:
                print("the preflight printed no apt-get line", file=sys.stderr)
                return 1
            fresh.run("the install line the preflight printed", f"apt-get update -qq && {m.group(1)} -y -qq")
            rc, out = fresh.run("README command 1 (again)", commands[0])
        if rc == 0:
            for i, command in enumerate(commands[1:], start=2):
                rc, out = fresh.run(f"README command {i}", command)
                if rc != 0:
                    break
        total = round(time.monotonic() - t0, 1)
    finally:
        if not args.keep:
            fresh.stop()
    print(f"\n{'step':<48} {'rc':>4} {'seconds':>8}")
    for row in fresh.rows:
        print(f"{row['step']!s:<48} {row['rc']!s:>4} {row['seconds']!s:>8}")
    print(f"{'total':<48} {'':>4} {total:>8}")
    result = {
        "runner": args.runner,
        "commands": commands,
        "rows": fresh.rows,
        "total_s": total,
        "rc": rc,
        "log": str(fresh.log),
        "work": str(work),
    }
    (ROOT / "bench" / f"fresh_machine-{args.runner}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"log: {fresh.log}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
