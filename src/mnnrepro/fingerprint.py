"""What about a machine changes MNN's CPU arithmetic (issue 10, item 6: portable goldens).

A CPU golden (fixtures/golden/<ref>/) holds float32 gradients whose last bits belong to the machine that made
them. Found by experiment at 3.3.0 (same binaries, same arguments; see the "machine" note in the goldens'
provenance.json):

- MNN's x86 kernels are chosen at run time from cpuid (source/backend/cpu/x86_x64/FunctionDispatcher.cpp
  ``MNNFunctionInit``, AVX2Functions.cpp): SSE, AVX2, AVX2 with FMA. AVX-512 kernels exist only in a build with
  ``-DMNN_AVX512=ON``; the suite's builds leave it OFF (libMNN.so then has no zmm instruction), so AVX-512
  flags change nothing. Under QEMU an AVX2 CPU model and an SSE-only one give different numbers.
- The AVX2 and SSE softmax divides through two approximate reciprocals (``_mm256_rcp_ps`` / ``_mm_rcp_ps``,
  avx/MathFunctions.cpp). Intel and AMD, and CPU generations, implement RCPPS with different tables: the same
  binary gives different probabilities, hence different gradients. The probe below hashes the instruction's
  result for every float mantissa, so two CPUs with the same table compare equal whatever their names.
- Not machine properties: the number of cores, pinning to one core and cache sizes change nothing (MNN makes as
  many threads as it is told); the thread count the driver passes to MNN does, and is a run setting recorded
  in the golden's config.

``ARITHMETIC_FIELDS`` are compared; the other fields describe the machine for people.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
ARITHMETIC_FIELDS = ("arch", "mnn_x86_kernels", "rcpps")
UNKNOWN = "unknown"

# x86-64 System V: f(const float* in /rdi/, float* out /rsi/, uint64 n /rdx/, n > 0 a multiple of the width).
# Checked with objdump -D -b binary -m i386:x86-64.
_VRCPPS_YMM = bytes.fromhex(
    "c5fc1007"  # vmovups ymm0, [rdi]
    "c5fc53c0"  # vrcpps  ymm0, ymm0
    "c5fc1106"  # vmovups [rsi], ymm0
    "4883c720"  # add rdi, 32
    "4883c620"  # add rsi, 32
    "4883ea08"  # sub rdx, 8
    "75e6"  # jnz loop
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
    "75e9"  # jnz loop
    "c3"  # ret
)


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
    """The kernel family MNN 3.x picks from these cpuid flags in a build without MNN_AVX512 (the suite's):
    MNNFunctionInit takes the AVX2 functions when cpuid says AVX2 (and the OS saves YMM registers, which the
    kernel's flags already reflect), their FMA variants when it also says FMA3, else SSE with SSSE3."""
    if "avx2" in flags:
        return "avx2+fma" if "fma" in flags else "avx2"
    if "ssse3" in flags:
        return "sse"
    return "scalar"


def rcpps_digest(kernels: str) -> str:
    """sha256 (first 16 hex digits) of RCPPS over every float32 mantissa in [1, 2): the ymm form for the AVX2
    kernels, the xmm form for SSE. The exponent only shifts the result, so this is the whole table."""
    if kernels.startswith("avx2"):
        code, width = _VRCPPS_YMM, 8
    elif kernels == "sse":
        code, width = _RCPPS_XMM, 4
    else:
        return "none"
    bits = np.arange(1 << 23, dtype=np.uint32) | np.uint32(0x3F800000)
    source = bits.view(np.float32)
    result = np.empty_like(source)
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        page.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        function = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64)(address)
        function(source.ctypes.data, result.ctypes.data, source.size - source.size % width)
        del function
    finally:
        page.close()
    return "sha256:" + hashlib.sha256(result.view(np.uint32).tobytes()).hexdigest()[:16]


def probe() -> dict[str, Any]:
    """This machine's fingerprint. The driver runs here or in a container on this CPU (same cpuid, same RCPPS)."""
    arch = platform.machine()
    info = cpu_info()
    fingerprint: dict[str, Any] = {"format": FORMAT, "arch": arch}
    if arch in ("x86_64", "AMD64"):
        kernels = mnn_x86_kernels(frozenset(info.get("flags", "").split()))
        fingerprint["mnn_x86_kernels"] = kernels
        fingerprint["rcpps"] = rcpps_digest(kernels)
    else:  # no x86 dispatch and no RCPPS; other architectures have their own rules, not studied yet
        fingerprint["mnn_x86_kernels"] = "none"
        fingerprint["rcpps"] = "none"
    fingerprint["cpu"] = info.get("model name", UNKNOWN)
    fingerprint["cpu_id"] = "/".join(info.get(key, "?") for key in ("vendor_id", "cpu family", "model", "stepping"))
    return fingerprint


def arithmetic(fingerprint: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(fingerprint.get(key, UNKNOWN)) for key in ARITHMETIC_FIELDS}


def differences(golden: Mapping[str, Any] | None, here: Mapping[str, Any]) -> list[str]:
    """Why the machines' arithmetic may differ ([] when it is the same): each arithmetic field that differs or
    that the golden does not know."""
    if not golden:
        return ["the golden records no machine fingerprint"]
    mine, theirs = arithmetic(here), arithmetic(golden)
    out = []
    for key in ARITHMETIC_FIELDS:
        if theirs[key] == UNKNOWN:
            out.append(f"{key}: unknown for the golden's machine, {mine[key]} here")
        elif theirs[key] != mine[key]:
            out.append(f"{key}: {theirs[key]} on the golden's machine, {mine[key]} here")
    return out


def describe(fingerprint: Mapping[str, Any]) -> str:
    values = arithmetic(fingerprint)
    return f"{fingerprint.get('cpu', UNKNOWN)} ({', '.join(f'{k}={v}' for k, v in values.items())})"


if __name__ == "__main__":
    import json

    print(json.dumps(probe(), indent=1))
