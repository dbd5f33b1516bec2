#!/usr/bin/env python3
"""Benchmark: the container runner's overhead per command, against the host runner (goal: under 2 s).

Runs a trivial command and the driver's --help N times through each runner and prints median and spread.
Writes bench/container.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mnnrepro import image  # noqa: E402
from mnnrepro.docker_runner import DockerRunner  # noqa: E402
from mnnrepro.runner import HostRunner, Runner  # noqa: E402
from mnnrepro.settings import load  # noqa: E402


def measure(runner: Runner, argv: list[str], n: int) -> dict[str, float]:
    times = []
    for _ in range(n):
        start = time.monotonic()
        res = runner.run(argv, timeout_s=60)
        times.append(time.monotonic() - start)
        if res.returncode != 0:
            raise SystemExit(f"{runner.name}: {argv} exited {res.returncode}: {res.output[-300:]}")
    return {
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
    }


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    settings = load({})
    client = image.connect()
    tag = image.ensure_image(client, base=settings.base_image, cache_dir=settings.cache_dir)
    drivers = sorted(settings.cache_dir.glob("variants/*/driver-*/mnist_driver"))
    docker = DockerRunner(client, tag, read_only=(ROOT,), read_write=(settings.cache_dir,))
    host = HostRunner()
    out: dict[str, object] = {"image": tag, "n": n}
    for label, argv in (("true", ["true"]), ("driver_help", [str(drivers[-1]), "--help"] if drivers else ["true"])):
        out[label] = {"host": measure(host, argv, n), "docker": measure(docker, argv, n)}
        h, d = out[label]["host"]["median_s"], out[label]["docker"]["median_s"]  # type: ignore[index]
        print(f"{label}: host {h:.3f}s, docker {d:.3f}s, overhead {d - h:.3f}s (median of {n})")
    (ROOT / "bench" / "container.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
