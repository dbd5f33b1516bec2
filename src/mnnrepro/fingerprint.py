"""The properties of a machine that change MNN's CPU arithmetic (issue 10, item 6: portable goldens).

A CPU golden (fixtures/golden/mnist/<ref>/) holds float32 gradients whose last bits belong to the machine that made
it. Measured at 3.3.0 and 47027e10 with the suite's builds (gcc 12.2, its CMake options), the same driver
arguments, and the dumps compared with the goldens bit for bit:

- RCPPS. MNN's AVX2 and SSE softmax divide through two approximate reciprocals (``_mm256_rcp_ps`` /
  ``_mm_rcp_ps``, source/backend/cpu/x86_x64/{avx,sse}/MathFunctions.cpp: at 3.3.0 the only approximate
  instructions in libMNN.so; 47027e10's -ffast-math code also divides through RCPPS). Intel and AMD implement it
  with different tables (52% of the mantissas differ, by up to 2^-11 relative). The same binaries reproduce the
  goldens bit for bit on an Intel Xeon (family 6 model 207) and differ on an AMD EPYC (family 26): max_rel 6.5e-5
  at step 0, 8.5e-5 at step 1. On that AMD, replacing only the results of the RCPPS instructions the run executes
  by the Intel table (under gdb) gives the goldens bit for bit again. ``rcpps`` hashes the instruction's result
  for every float mantissa in [1, 2), so CPUs with one table compare equal whatever their names. (RSQRTPS is in
  47027e10's libMNN.so too, but this workload never executes it.)
- The kernel family. ``MNNFunctionInit`` (x86_x64/FunctionDispatcher.cpp, AVX2Functions.cpp) reads cpuid at
  run time: AVX2 kernels with AVX2, their FMA variants with FMA3, else SSE. Under QEMU (exact reciprocals) an
  AVX2+FMA, an AVX2-only and an SSE-only CPU model give three different results.
- Not AVX-512: its kernels are compiled only with ``-DMNN_AVX512=ON``; the suite's builds leave it OFF and
  libMNN.so has no zmm instruction (the Intel and AMD machines above both have AVX-512). Not the number of cores,
  pinning to one core, or cache sizes (2 vs 16 cores, 1 vs 2 MiB L2: same bits), nor the compiler (a gcc 13.3
  build on the Intel machine gives the goldens' bits too). The thread count passed to MNN does change the last
  bits; it is a run setting, recorded in the golden's config and compared there.

Only ``ARITHMETIC_FIELDS`` are compared; ``cpu`` and ``cpu_id`` describe the machine for people. A field that is
unknown on either side never matches: architectures other than x86-64 are not studied yet.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import mmap
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

FORMAT = 1
ARITHMETIC_FIELDS = ("arch", "mnn_x86_kernels", "rcpps")
UNKNOWN = "unknown"
RCPPS_MAX_REL_ERROR = 1.5 * 2.0**-12  # the bound Intel's and AMD's manuals give for RCPPS

# x86-64 System V: f(const float* in /rdi/, float* out /rsi/, uint64 n /rdx/), n > 0 a multiple of the width.
# Checked with objdump -D -b binary -m i386:x86-64.
_VRCPPS_YMM = bytes.fromhex(
    "c5fc1007"  # vmovups ymm0, [rdi]
    "c5fc53c0"  # vrcpps  ymm0, ymm0
    "c5fc1106"  # vmovups [rsi], ymm0
    "4883c720"  # add rdi, 32
    "4883c620"  # add rsi, 32
    "4883ea08"  # sub rdx, 8
    "75e6"  # jnz (to the first instruction)
    "c5f877"  # vzeroupper
    "c3"  # ret
)
_RCPPS_XMM = bytes.fromhex(
    "0f1007"  # movups xmm0, [rdi]
    "0f53c0"  # rcpps  xmm0, xmm0
    "0f1106"  # movups [rsi], xmm0
    "4883c710"  # add rdi, 16
    "4883c610"  # add rsi, 16
    "4883ea04"  # sub rdx, 4
    "75e9"  # jnz (to the first instruction)
    "c3"  # ret
)
_CHUNK = 1 << 20


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def mnn_x86_kernels(flags: set[str] | frozenset[str]) -> str:
    """The kernel family MNN 3.x picks from these cpuid flags (Linux's names) in a build without MNN_AVX512,
    as the suite's are: AVX2 (the kernel lists it only where the OS saves YMM registers, as MNN also requires),
    with FMA3 its FMA variants, else SSE with SSSE3."""
    if not flags:
        return UNKNOWN
    if "avx2" in flags:
        return "avx2+fma" if "fma" in flags else "avx2"
    if "ssse3" in flags:
        return "sse"
    return "scalar"


def _run_rcpps(code: bytes, source: NDArray[np.float32], result: NDArray[np.float32]) -> None:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        page.write(code)
        holder = ctypes.c_char.from_buffer(page)
        try:
            function = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64)(
                ctypes.addressof(holder)
            )
            function(source.ctypes.data, result.ctypes.data, source.size)
        finally:
            del holder  # the buffer export must end before the map can close
    finally:
        page.close()


def rcpps_table(kernels: str, start: int = 0, stop: int = 1 << 23) -> NDArray[np.float32]:
    """RCPPS of the floats in [1, 2) with mantissas start..stop-1 (multiples of 8): the ymm form (VEX, as the
    AVX2 kernels use it) for AVX2 kernels, the xmm form for SSE. Only on x86-64 Linux."""
    if platform.machine() != "x86_64" or platform.system() != "Linux":
        raise OSError(f"no RCPPS probe on {platform.system()} {platform.machine()}")
    code = _VRCPPS_YMM if kernels.startswith("avx2") else _RCPPS_XMM
    if start % 8 or stop % 8 or not 0 <= start < stop <= 1 << 23:
        raise ValueError(f"mantissas {start}..{stop}: need multiples of 8 within 0..2^23")
    source = (np.arange(start, stop, dtype=np.uint32) | np.uint32(0x3F800000)).view(np.float32)
    result = np.empty_like(source)
    _run_rcpps(code, source, result)
    return result


def rcpps_digest(kernels: str) -> str:
    """sha256 (16 hex digits) of RCPPS over every float32 mantissa in [1, 2): the exponent only shifts the
    result, so this names the whole table. With AVX2 kernels MNN runs both forms (the AVX2 softmax the ymm one,
    -ffast-math divisions at older refs the xmm one): the ymm table's digest, and the xmm one's after it where
    the two differ (on every CPU measured they are one table). UNKNOWN where it cannot be measured."""
    if kernels not in ("avx2+fma", "avx2", "sse"):
        return UNKNOWN
    forms = (kernels, "sse") if kernels != "sse" else ("sse",)
    digests = [hashlib.sha256() for _ in forms]
    try:
        for start in range(0, 1 << 23, _CHUNK):
            for form, digest in zip(forms, digests, strict=True):
                digest.update(rcpps_table(form, start, start + _CHUNK).view(np.uint32).astype("<u4").tobytes())
    except (OSError, ValueError, AttributeError):  # not x86-64 Linux, or no executable memory here
        return UNKNOWN
    names = [digest.hexdigest()[:16] for digest in digests]
    return "sha256:" + names[0] + ("" if len(set(names)) == 1 else f"+xmm:{names[1]}")


@functools.cache
def probe() -> dict[str, Any]:
    """This machine's fingerprint. The driver runs here or in a container on this same CPU (same cpuid, same
    RCPPS), so the harness's process can measure it."""
    arch = platform.machine()
    info = cpu_info()
    fingerprint: dict[str, Any] = {"format": FORMAT, "arch": arch or UNKNOWN}
    if arch == "x86_64":
        kernels = mnn_x86_kernels(frozenset(info.get("flags", "").split()))
        fingerprint["mnn_x86_kernels"] = kernels
        fingerprint["rcpps"] = rcpps_digest(kernels)
    else:
        fingerprint["mnn_x86_kernels"] = "none"
        fingerprint["rcpps"] = UNKNOWN  # other architectures: what changes MNN's arithmetic is not studied yet
    fingerprint["cpu"] = info.get("model name", UNKNOWN)
    fingerprint["cpu_id"] = "/".join(info.get(key, "?") for key in ("vendor_id", "cpu family", "model", "stepping"))
    return fingerprint


def arithmetic(fingerprint: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(fingerprint.get(key, UNKNOWN)) for key in ARITHMETIC_FIELDS}


def differences(golden: Mapping[str, Any] | None, here: Mapping[str, Any]) -> list[str]:
    """Why MNN's CPU arithmetic may differ between the golden's machine and this one; [] when it is the same.
    Each arithmetic field that differs, or that either side does not know, is one reason."""
    if not golden:
        return ["the golden records no machine fingerprint"]
    mine, theirs = arithmetic(here), arithmetic(golden)
    out = []
    for key in ARITHMETIC_FIELDS:
        if UNKNOWN in (theirs[key], mine[key]) or theirs[key] != mine[key]:
            out.append(f"{key} {theirs[key]} on the golden's machine, {mine[key]} here")
    return out


def describe(fingerprint: Mapping[str, Any]) -> str:
    values = ", ".join(f"{k} {v}" for k, v in arithmetic(fingerprint).items())
    return f"{fingerprint.get('cpu', UNKNOWN)} ({values})"


if __name__ == "__main__":
    import json

    print(json.dumps(probe(), indent=1))
