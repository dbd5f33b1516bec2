"""MNN's own op and gradient tests on every backend (issue 13): the test binary (mnn_optest, native/optest), one
cell's sweep through the runner, and each test's raw outcome.

A sweep is one runner call: ``optest_batch.py`` runs every test of the selection in its own process with its own
time limit, ``jobs`` at a time (many test processes per container, never one container per test). One crash
costs one test. Then, in this order:

- A test killed at its limit runs again alone (one job) under ``rerun_factor`` times its limit: on a slower or
  busier machine of the kind the suite supports a test may only need more time (issue 21: three tests took 285 s
  and 349 s on a 2-core machine where the limit was 120 s). Passing then, it is PASS marked slow, not a failure;
  killed again, it is TIMEOUT.
- Tests that failed or crashed run once more (a crash under gdb, for the backtrace and the signature); a test
  with a FLAKE row runs again up to its row's ``reruns`` until it passes. Passing then makes them FLAKE
  (opjudge.py).

The judge reads only the files written here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ... import build, cache
from ... import faults as planted
from ...cells import GDB_SCRIPT, Cell, is_validated
from ...contract import read_events
from ...errors import BuildError
from ...icd import Icd
from ...progress import Progress
from ...runner import Completed, Runner
from . import opvalidation

BATCH_SCRIPT = Path(__file__).with_name("optest_batch.py")
MAX_EXCLUDE_ROUNDS = 3
# Exit codes of mnn_optest (native/optest/main.cpp, native/README.md).
EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_EXERCISED, EXIT_OUTPUT, EXIT_NO_SUCH_TEST = 0, 1, 2, 4, 6, 8
_REGISTER = re.compile(r'MNNTestSuiteRegister\s*\(\s*\w+\s*,\s*"([^"]+)"\s*\)')
# The tests this suite builds and runs: every registration of these prefixes, wherever its source lives
# (op/lowMemory/* and op/int4Ptq are registered from test/speed/HybridConvSpeedTest.cpp).
PREFIXES = ("op/", "grad/")
# Bumped when the scan or the left-out reasons change: part of mnn_optest's build key (build_binary).
SCAN_VERSION = 1
_COMMENT_OR_LITERAL = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*.*?\*/', re.S)
_DIRECTIVE = re.compile(r"^\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)$")
_PP_TOKEN = re.compile(
    r"\s*(?:defined\s*\(\s*(?P<d1>\w+)\s*\)|defined\s+(?P<d2>\w+)|(?P<num>0[xX][0-9a-fA-F]+|\d+)[uUlL]*"
    r"|(?P<name>\w+)|(?P<op>&&|\|\||[!=<>]=|[!<>()+\-*/%]))"
)
_BINARY_OPS: dict[str, Callable[[int, int], int]] = {
    "||": lambda a, b: int(bool(a) or bool(b)),
    "&&": lambda a, b: int(bool(a) and bool(b)),
    "==": lambda a, b: int(a == b),
    "!=": lambda a, b: int(a != b),
    "<": lambda a, b: int(a < b),
    ">": lambda a, b: int(a > b),
    "<=": lambda a, b: int(a <= b),
    ">=": lambda a, b: int(a >= b),
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: int(a / b),
    "%": lambda a, b: a % b,
}
_PRECEDENCE = (("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%"))
_NAME = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_.+\-]+)+$")
_FAILED_OBJECT = re.compile(r"^FAILED: .*?/test/((?:[A-Za-z0-9_]+/)*[A-Za-z0-9_.+\-]+\.cpp)\.o\s*$", re.M)
_LINK_MISSING = re.compile(
    r"/test/((?:[A-Za-z0-9_]+/)*[A-Za-z0-9_.+\-]+\.cpp)\.o: in function .*?\n.*?(undefined reference to .*)"
)
# Statuses a single process can have; opjudge.py adds FLAKE, CPU-FAIL, UNEXPECTED-PASS, NOT-RUN and the partial
# FALLBACK (which needs the CPU run of the same test).
RAW = ("PASS", "FAIL", "CRASH", "TIMEOUT", "NOT-EXERCISED", "NO-GPU-WORK", "FALLBACK")
PASSED = ("PASS", "FALLBACK")  # the test itself returned true (FALLBACK: on the CPU); NO-GPU-WORK tested nothing
PLANTS = {"plant-crash": "crash", "plant-hang": "hang"}


# -- the binary --------------------------------------------------------------------------------------------
def core_defines(build_dir: Path) -> list[str]:
    """The -D definitions MNN's core objects were compiled with (a test's #ifdef must see what the library has),
    from the core build's build.ninja."""
    ninja = build_dir / "build.ninja"
    if not ninja.is_file():
        return []
    text = ninja.read_text(errors="replace")
    match = re.search(r"^build CMakeFiles/MNNCore\.dir/.*?\n(?:  .*\n)*?  DEFINES = (.*)$", text, re.M)
    return sorted(set(match.group(1).split())) if match else []


def failed_sources(log: str) -> dict[str, str]:
    """Test sources (relative to MNN's test/) that failed to compile or link, with the first error of each."""
    failed: dict[str, str] = {}
    for m in _LINK_MISSING.finditer(log):
        failed.setdefault(m.group(1), m.group(2).strip()[:200])
    for m in _FAILED_OBJECT.finditer(log):
        rel = m.group(1)
        after = log[m.end() :]
        error = re.search(r"error: (.*)", after)
        failed.setdefault(rel, "does not compile: " + (error.group(1).strip()[:200] if error else "see the build log"))
    return {rel: why for rel, why in failed.items() if not rel.startswith(("..", "/"))}


def registered_names(path: Path) -> list[str]:
    """The test names a source file registers (MNNTestSuiteRegister(Case, "name")), commented-out ones not."""
    try:
        return _REGISTER.findall(_strip_comments(path.read_text(errors="replace")))
    except OSError:
        return []


# -- registrations: what the tree declares, and why a declared test is not in the binary ------------------------
@dataclass(frozen=True)
class Branch:
    """One enclosing preprocessor conditional of a registration: the directive as written, and what must hold
    for the branch the registration is in (``taken`` true, every earlier ``#if``/``#elif`` of it false)."""

    text: str  # "#ifdef MNN_LOW_MEMORY", "#else of #if defined(X)"
    line: int
    taken: str | None  # a C preprocessor expression; None in an #else
    not_taken: tuple[str, ...] = ()


@dataclass(frozen=True)
class Registration:
    name: str
    source: str  # relative to the tree's test/
    line: int
    branches: tuple[Branch, ...] = ()


def _strip_comments(text: str) -> str:
    """C++ comments blanked (line breaks kept, so line numbers hold); string and character literals untouched."""

    def blank(m: re.Match[str]) -> str:
        token = m.group(0)
        return token if token[0] in "\"'" else re.sub(r"[^\n]", " ", token)

    return _COMMENT_OR_LITERAL.sub(blank, text)


def _branch(kind: str, rest: str, line: int) -> Branch:
    if kind == "ifdef":
        return Branch(f"#ifdef {rest}", line, f"defined({rest})")
    if kind == "ifndef":
        return Branch(f"#ifndef {rest}", line, f"!defined({rest})")
    return Branch(f"#if {rest}", line, rest)


def scan_source(text: str, source: str) -> list[Registration]:
    """Every registration of a source file with the preprocessor conditionals around it, read as written (the
    build decides what is compiled; this names the #if that a missing test sits under)."""
    stack: list[Branch] = []
    found: list[Registration] = []
    lines = _strip_comments(text).split("\n")
    number = 0
    while number < len(lines):
        line, first = lines[number], number + 1
        while line.endswith("\\") and number + 1 < len(lines):  # a directive continued on the next line
            number += 1
            line = line[:-1] + " " + lines[number]
        number += 1
        if directive := _DIRECTIVE.match(line):
            kind, rest = directive.group(1), " ".join(directive.group(2).split())
            if kind in ("if", "ifdef", "ifndef"):
                stack.append(_branch(kind, rest, first))
            elif kind == "endif":
                if stack:
                    stack.pop()
            elif stack:  # elif, else: the earlier branches did not hold
                top = stack.pop()
                earlier = (*top.not_taken, *([top.taken] if top.taken is not None else []))
                head = top.text.split(" of ", 1)[-1]
                if kind == "elif":
                    stack.append(Branch(f"#elif {rest} of {head}", first, rest, earlier))
                else:
                    stack.append(Branch(f"#else of {head}", first, None, earlier))
            continue
        for name in _REGISTER.findall(line):
            found.append(Registration(name, source, first, tuple(stack)))
    return found


def scan_registrations(tree: Path) -> list[Registration]:
    """The op/ and grad/ registrations of every test source under the tree's test/, in path order."""
    test_dir = tree / "test"
    found: list[Registration] = []
    for path in sorted(test_dir.rglob("*.cpp")):
        rel = path.relative_to(test_dir).as_posix()
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found += [r for r in scan_source(text, rel) if r.name.startswith(PREFIXES)]
    return found


def test_sources(tree: Path) -> list[str]:
    """The test sources (relative to test/) mnn_optest compiles: exactly those registering an op/ or grad/ test
    (TestUtils.cpp, which they all need, is added by native/optest/CMakeLists.txt)."""
    return sorted({r.source for r in scan_registrations(tree)})


def _definitions(defines: list[str] | tuple[str, ...]) -> dict[str, int]:
    """``-DNAME`` / ``-DNAME=VALUE`` as the preprocessor reads them (a value that is not a number counts as 1)."""
    out: dict[str, int] = {}
    for flag in defines:
        name, _, value = flag.removeprefix("-D").partition("=")
        try:
            out[name] = int(value, 0) if value else 1
        except ValueError:
            out[name] = 1
    return out


def pp_value(expression: str, defined: dict[str, int]) -> int | None:
    """A #if expression under these definitions (an unknown name is 0, as in C); None if it cannot be read."""
    tokens: list[tuple[str, object]] = []
    pos = 0
    while pos < len(expression.rstrip()):
        m = _PP_TOKEN.match(expression, pos)
        if m is None or m.end() == pos:
            return None
        pos = m.end()
        if (macro := m.group("d1") or m.group("d2")) is not None:
            tokens.append(("num", int(macro in defined)))
        elif m.group("num") is not None:
            tokens.append(("num", int(m.group("num"), 0)))
        elif m.group("name") is not None:
            tokens.append(("num", defined.get(m.group("name"), 0)))
        else:
            tokens.append(("op", m.group("op")))
    try:
        value, rest = _pp_parse(tokens, 0)
    except (IndexError, ValueError, ZeroDivisionError):
        return None
    return value if not rest else None


def _pp_parse(tokens: list[tuple[str, object]], level: int) -> tuple[int, list[tuple[str, object]]]:
    """Precedence climbing over _PRECEDENCE (level = index), unary ! - + and parentheses at the bottom."""
    if level == len(_PRECEDENCE):
        kind, value = tokens[0]
        if kind == "num":
            return int(str(value)), tokens[1:]
        if value in ("!", "-", "+"):
            operand, rest = _pp_parse(tokens[1:], level)
            return {"!": int(not operand), "-": -operand, "+": operand}[str(value)], rest
        if value == "(":
            inner, rest = _pp_parse(tokens[1:], 0)
            if not rest or rest[0] != ("op", ")"):
                raise ValueError("unbalanced parentheses")
            return inner, rest[1:]
        raise ValueError(f"unexpected {value}")
    left, rest = _pp_parse(tokens, level + 1)
    while rest and rest[0][0] == "op" and rest[0][1] in _PRECEDENCE[level]:
        op = str(rest[0][1])
        right, rest = _pp_parse(rest[1:], level + 1)
        left = _BINARY_OPS[op](left, right)
    return left, rest


def _branch_holds(branch: Branch, defined: dict[str, int]) -> bool | None:
    values = [pp_value(e, defined) for e in branch.not_taken]
    taken = pp_value(branch.taken, defined) if branch.taken is not None else 1
    if any(v is None for v in values) or taken is None:
        return None
    return bool(taken) and not any(values)


def compiled_out_reason(reg: Registration, defines: list[str] | tuple[str, ...]) -> str:
    """Why a registration inside #if/#ifdef is not in the binary, naming the conditional that is false under the
    core build's definitions (the ones every test source is compiled with: core_defines) and the option it
    needs, e.g. "needs MNN_LOW_MEMORY" for op/int4Ptq."""
    defined = _definitions(defines)
    holds = [_branch_holds(b, defined) for b in reg.branches]
    false = [b for b, h in zip(reg.branches, holds, strict=True) if h is False]
    if not false:
        where = ", ".join(f"{b.text} at test/{reg.source}:{b.line}" for b in reg.branches)
        if all(holds):  # every #if holds, so the preprocessor is not why: say so instead of guessing
            return f"not in mnn_optest --list though {where} holds under the core build's definitions (unexplained)"
        return f"compiled out, presumably ({where}: a condition this scan cannot evaluate)"
    where = ", ".join(f"{b.text} at test/{reg.source}:{b.line}" for b in false)
    needs: list[str] = []
    for b in false:
        taken = b.taken or ""  # an #else needs the earlier branches false: no option to name
        macros = [m for m in re.findall(r"defined\s*\(?\s*(\w+)", taken) if m not in defined]
        if macros and not taken.lstrip().startswith("!"):
            needs.append((" or " if "||" in taken else " and ").join(dict.fromkeys(macros)))
    if not needs:
        return f"compiled out ({where})"
    return f"compiled out: needs {'; '.join(needs)} ({where}; not among the core build's definitions)"


def left_out(
    registrations: list[Registration], built: tuple[str, ...], excluded: dict[str, str], defines: list[str]
) -> dict[str, str]:
    """Every scanned op/ and grad/ registration that is not in the binary's list, with why: its source did not
    compile or link (``excluded``), it is compiled out (its #if), or, with neither, that nothing explains it."""
    have = set(built)
    out: dict[str, str] = {}
    for reg in registrations:
        if reg.name in have or reg.name in out:
            continue
        if reg.source in excluded:
            out[reg.name] = f"not built: test/{reg.source} {excluded[reg.source]}"
        elif reg.branches:
            out[reg.name] = compiled_out_reason(reg, defines)
        else:
            out[reg.name] = f"registered at test/{reg.source}:{reg.line} but not in mnn_optest --list (unexplained)"
    return out


@dataclass(frozen=True)
class Coverage:
    """A selection's tests against the tree's registrations: what was built, and each one left out with why."""

    built: tuple[str, ...]
    registered: tuple[str, ...]
    left_out: dict[str, str]

    def line(self, scope: str = "the selection") -> str:
        text = f"tests: {len(self.built)} built of {len(self.registered)} registered for {scope}"
        if self.left_out:
            text += "; left out: " + "; ".join(f"{n} ({why})" for n, why in sorted(self.left_out.items()))
        return text


@dataclass(frozen=True)
class Binary:
    """A built mnn_optest: its tests (as it lists them) and the sources left out, with their tests and why."""

    path: Path
    tests: tuple[str, ...]
    excluded: dict[str, str] = field(default_factory=dict)  # source (relative to test/) -> why
    excluded_tests: dict[str, str] = field(default_factory=dict)  # test name -> why it was not built
    registered: tuple[str, ...] = ()  # the tree's op/ and grad/ registrations (scan_registrations), sorted
    left_out: dict[str, str] = field(default_factory=dict)  # registered, not in `tests`: name -> why

    @classmethod
    def load(cls, directory: Path) -> Binary:
        data = json.loads((directory / "build.json").read_text())
        return cls(
            directory / "mnn_optest",
            tuple(data["tests"]),
            data["excluded"],
            data["excluded_tests"],
            tuple(data.get("registered", ())),
            data.get("left_out", {}),
        )

    @classmethod
    def write(
        cls, directory: Path, listing: str, excluded: dict[str, str], source: Path, defines: list[str] | None = None
    ) -> Binary:
        """build.json: the binary's tests, the sources left out, and every op/ or grad/ registration of the tree
        that the binary lacks with its reason (compiled out under an #if of the core build's definitions, or
        its source left out), so a session can say "N built of M registered" and name the rest."""
        tests = tuple(line.strip() for line in listing.splitlines() if _NAME.match(line.strip()))
        excluded_tests = {
            name: f"not built: test/{rel} {why}"
            for rel, why in excluded.items()
            for name in registered_names(source / "test" / rel)
        }
        registrations = scan_registrations(source)
        missing = left_out(registrations, tests, excluded, defines or [])
        excluded_tests.update(missing)  # compiled-out tests are not run either: the session lists them so
        registered = tuple(sorted({r.name for r in registrations}))
        body = {
            "tests": list(tests),
            "excluded": excluded,
            "excluded_tests": excluded_tests,
            "registered": list(registered),
            "left_out": missing,
            "defines": defines or [],
        }
        (directory / "build.json").write_text(json.dumps(body, indent=1))
        return cls(directory / "mnn_optest", tests, excluded, excluded_tests, registered, missing)

    def coverage(self, patterns: tuple[str, ...]) -> Coverage:
        """The selection against the tree's registrations (``Coverage.line``: "tests: N built of M ...")."""
        registered = tuple(select(self.registered, patterns))
        have = set(self.tests)
        return Coverage(
            tuple(n for n in registered if n in have),
            registered,
            {n: self.left_out[n] for n in registered if n in self.left_out},
        )

    def moved(self, directory: Path) -> Binary:
        return replace(self, path=directory / "mnn_optest")


# -- building mnn_optest against a core (the ops workload's own tool: build.py knows no workload) ----------------
OPTEST_PARTS = ("optest", "src", "cmake")  # mnn_optest's sources, the driver's it shares, the shared CMake


def configure_args(
    source: Path,
    lib_dir: Path,
    build_dir: Path,
    *,
    defines: list[str],
    exclude: list[str],
    ccache: bool,
    sources: list[str],
) -> list[str]:
    """mnn_optest's configure: ``sources`` are the tree's test sources that register op/ or grad/ tests
    (test_sources), passed so the binary compiles exactly what the harness scanned."""
    args = [
        "cmake",
        "-G",
        "Ninja",
        "-S",
        str(build.NATIVE_DIR / "optest"),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        f"-DMNN_SOURCE_DIR={source}",
        f"-DMNN_LIB_DIR={lib_dir}",
        "-DMNNREPRO_OPTEST_RPATH=$ORIGIN/../lib",
        f"-DMNNREPRO_MNN_DEFINES={';'.join(defines)}",
        f"-DMNNREPRO_TEST_EXCLUDE={';'.join(exclude)}",
        f"-DMNNREPRO_TEST_SOURCES={';'.join(sources)}",
    ]
    if ccache:
        args += ["-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    return args


def build_binary(builder: build.Builder, core: build.Core) -> Binary:
    """mnn_optest of this core: every MNN test source registering an op/ or grad/ test (test_sources: test/op,
    test/grad, test/speed/HybridConvSpeedTest.cpp) with our entry point (native/optest), built with the Builder's
    public pieces (its lock, logged steps, staging and publishing) under ``variants/<core>/optest-<native>/``.
    A test source that does not compile or link against this release's libraries is left out and said, with
    its tests and the first error (failed_sources); anything else failing is a BuildError."""
    sources = test_sources(core.source.path)
    # The scanned sources and the scan's version are build inputs as much as native/optest is.
    nkey = build.digest([build.native_key(OPTEST_PARTS), sources, SCAN_VERSION])
    dest = core.variant_dir / f"optest-{nkey[:16]}"
    cache.use_build(builder.cache_dir, core.key)
    if builder.complete(dest):
        builder.log.add("optest", nkey, 0.0, cached=True)
        return Binary.load(dest)
    with builder.lock(core.key[:24] + "-optest"):
        if builder.complete(dest):
            return Binary.load(dest)
        what = f"{len(sources)} test sources with op/, grad/ tests"
        builder.say(f"building mnn_optest ({what}) against core [{core.key[:12]}]")
        start = time.monotonic()
        build_dir = builder.cache_dir / "build" / f"{core.key[:24]}-optest-{nkey[:16]}"
        defines = core_defines(core.build_dir)
        excluded = _compile_leaving_out(builder, core, build_dir, defines, sources)
        listing = builder.runner.run(
            [str(build_dir / "mnn_optest"), "--list"],
            env={"LD_LIBRARY_PATH": str(core.lib_dir)},  # its RPATH is $ORIGIN/../lib, true once published
            writable=(build_dir,),
            timeout_s=120,
        )
        if listing.returncode != 0:
            raise BuildError(f"mnn_optest --list failed (exit {listing.returncode}): {listing.output[-2000:]}")
        staging = builder.staging(dest)
        shutil.copy2(build_dir / "mnn_optest", staging / "mnn_optest")
        binary = Binary.write(staging, listing.output, excluded, core.source.path, defines)
        builder.say("mnn_optest: " + binary.coverage(PREFIXES).line("the tree's op/ and grad/ tests"))
        builder.publish(staging, dest, {"core": core.key, "native": nkey, "excluded": excluded})
        builder.log.add("optest", nkey, time.monotonic() - start, cached=False)
    return binary.moved(dest)


def _compile_leaving_out(
    builder: build.Builder, core: build.Core, build_dir: Path, defines: list[str], sources: list[str]
) -> dict[str, str]:
    """Configure and build mnn_optest, leaving out (and saying) each test source that does not compile or link,
    up to MAX_EXCLUDE_ROUNDS times; the sources left out, with why."""
    excluded: dict[str, str] = {}
    ref = core.source.ref
    for attempt in range(MAX_EXCLUDE_ROUNDS + 1):
        argv = configure_args(
            core.source.path,
            core.lib_dir,
            build_dir,
            defines=defines,
            exclude=sorted(excluded),
            ccache=builder.ccache,
            sources=sources,
        )
        builder.run_logged(argv, build_dir / "configure.log", f"{ref} mnn_optest configure")
        log = build_dir / f"build-{attempt}.log"
        args = ["ninja", "-C", str(build_dir), "-k", "0", *(["-j", str(builder.jobs)] if builder.jobs else [])]
        if builder.run_logged(args, log, f"{ref} mnn_optest build", check=False) == 0:
            break
        failed = failed_sources(log.read_text(errors="replace"))
        if not failed or attempt == MAX_EXCLUDE_ROUNDS:
            builder.run_logged(args, log, f"{ref} mnn_optest build")  # raises BuildError with the tail
        for rel, why in failed.items():
            builder.say(f"mnn_optest: leaving out test/{rel}: {why}")
        excluded.update(failed)
    return excluded


def matches(name: str, pattern: str) -> bool:
    """One selection pattern: `op/` (ends in /) is every test under it, `op/conv*` a glob, `op/relu` that test
    only (never `op/relu6`: upstream's prefix match is what this binary exists to avoid)."""
    if pattern.endswith("/"):
        return name.startswith(pattern)
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern


def select(names: tuple[str, ...], patterns: tuple[str, ...]) -> list[str]:
    """The tests a selection names, in registry order."""
    return [n for n in names if any(matches(n, p) for p in patterns)]


def unmatched(names: tuple[str, ...], patterns: tuple[str, ...]) -> list[str]:
    """The patterns that name no test at all (a typo, or a test this ref does not have)."""
    return [p for p in patterns if not any(matches(n, p) for n in names)]


def declared_names(tree: Path) -> tuple[str, ...]:
    """The op/ and grad/ test names the tree's test sources register, wherever under test/ (the scan that picks
    what mnn_optest compiles), read before anything is built: a selection that names none of them is an error
    before the build (the built binary's list and its left-out reasons are the authority afterwards)."""
    return tuple(sorted({r.name for r in scan_registrations(tree)}))


def dirname(test: str) -> str:
    return test.replace("/", "__")


# -- one test's outcome --------------------------------------------------------------------------------------
@dataclass
class Outcome:
    test: str
    status: str  # one of RAW
    reason: str
    duration_s: float
    returncode: int | None
    signal: str | None = None
    by_backend: dict[str, dict[str, int]] = field(default_factory=dict)
    ops_total: int = 0
    crash: dict[str, Any] | None = None
    directory: Path | None = None
    rerun: Outcome | None = None  # the next run of a failure (its own rerun is the one after, for FLAKE rows)
    limit_s: float = 0.0  # the time limit this run had
    slow_after_s: float = 0.0  # this is the rerun alone of a test killed at this limit (0: it was not)

    def placement(self) -> dict[str, int]:
        return {b: sum(types.values()) for b, types in sorted(self.by_backend.items())}

    def runs(self) -> list[Outcome]:
        """This run and its reruns, in order."""
        out: list[Outcome] = [self]
        nxt = self.rerun
        while nxt is not None:
            out.append(nxt)
            nxt = nxt.rerun
        return out

    def last(self) -> Outcome:
        return self.runs()[-1]


def _signal_name(code: int) -> str | None:
    """The signal that ended a test process (a negative code, or 128+N from gdb), by the runner's one rule."""
    return Completed(argv=(), returncode=code, duration_s=0.0).signal_name


def failure_message(directory: Path, limit: int = 240) -> str:
    """The test's own words about its failure: the first lines it printed that are not this harness's."""
    lines: list[str] = []
    for name in ("stderr.txt", "stdout.txt"):
        path = directory / name
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                text = line.strip()
                if text and not text.startswith(("[mnn_optest]", "The device supports")) and "running " not in text:
                    lines.append(text)
    return " | ".join(lines[:2])[:limit]


def read_outcome(directory: Path, test: str, backend: str) -> Outcome | None:
    """The outcome of one test process from its files; None when it did not finish (no result.json)."""
    result_path = directory / "result.json"
    if not result_path.is_file():
        return None
    result = json.loads(result_path.read_text())
    code = int(result["returncode"])
    duration = float(result.get("duration_s", 0.0))
    record = read_events(directory / "events.jsonl")
    test_event = record.test
    by_backend = dict(test_event.get("by_backend", {})) if test_event else {}
    out = Outcome(test, "FAIL", "", duration, code, directory=directory, by_backend=by_backend)
    out.ops_total = int(test_event.get("ops_total", 0)) if test_event else 0
    crash_path = directory / "crash.json"
    out.crash = json.loads(crash_path.read_text()) if crash_path.is_file() else None
    if result.get("timed_out"):
        out.status, out.reason = "TIMEOUT", f"killed after the time limit ({duration:.0f} s)"
    elif record.exercised is False or code == EXIT_NOT_EXERCISED:
        out.status = "NOT-EXERCISED"
        out.reason = str(record.backend.get("reason") or "exit 4 without a reason")
    elif (sig := _signal_name(code)) is not None:
        out.status, out.signal = "CRASH", sig
        out.reason = f"{sig} in {test}" + (
            f" ({failure_message(directory, 160)})" if failure_message(directory) else ""
        )
    elif code == EXIT_PASSED and test_event is not None and test_event.get("passed") is True:
        gpu_ops = sum(by_backend.get(backend, {}).values())
        if backend != "cpu" and out.ops_total == 0:
            # Some upstream tests return true at once on a non-CPU backend, or run their ops where the trace does
            # not look: either way nothing was tested on the GPU (issue 21), so this is never a pass.
            out.status = "NO-GPU-WORK"
            out.reason = f"passed, but the op trace saw no op at all, on {backend} or any other backend"
        elif backend != "cpu" and gpu_ops == 0:
            out.status = "FALLBACK"
            out.reason = f"passed, but all {out.ops_total} op(s) ran on {', '.join(sorted(by_backend))}"
        else:
            out.status = "PASS"
    elif code == EXIT_FAILED:
        out.reason = failure_message(directory) or "the test returned false"
    else:
        out.reason = {EXIT_NO_SUCH_TEST: "no such test in this binary", EXIT_USAGE: "bad command line"}.get(
            code, f"exit {code}" + (" without a test event" if test_event is None else "")
        )
    return out


# -- a cell's sweep -----------------------------------------------------------------------------------------
@dataclass
class SweepSpec:
    """What one cell's sweep needs; built by the ops session from a Prepared ref."""

    cell: Cell
    binary: Binary
    tests: list[str]
    runner: Runner
    plugin: Path | None
    icd: Icd | None
    precision: str
    timeout_s: float  # per test
    jobs: int
    result_dir: Path
    gdb_path: str | None = None
    faults: tuple[str, ...] = ()
    limits: dict[str, float] = field(default_factory=dict)  # per test, from [[slow]] rows (else timeout_s)
    reruns: dict[str, int] = field(default_factory=dict)  # reruns of a failure, from FLAKE rows (else 1)
    rerun_factor: float = 4.0  # a timeout runs again alone under this many times its limit
    # --vk-validation on|sync (issue 25): every run of a Vulkan cell's tests under the Khronos layer, its settings and
    # log in the run's directory (opvalidation.py); the driver makes the cell's canary (None: no canary, as off).
    vk_validation: str = "off"
    canary_driver: Path | None = None

    @property
    def validated(self) -> bool:
        return is_validated(self.cell, self.vk_validation)  # the one rule (cells.is_validated)

    def limit(self, test: str) -> float:
        return self.limits.get(test, self.timeout_s)


def test_argv(spec: SweepSpec, test: str, out: Path) -> list[str]:
    argv = [str(spec.binary.path), "--test", test, "--backend", spec.cell.backend, "--out", str(out)]
    argv += ["--precision", spec.precision]
    if spec.plugin is not None:
        argv += ["--plugin", str(spec.plugin)]
    return argv


def plant_env(spec: SweepSpec) -> dict[str, str]:
    """--fault plant-crash / plant-hang: mnn_optest crashes or hangs at the first test of the selection that is
    not the CPU's (the sweep must record it and go on)."""
    kinds = [PLANTS[f] for f in spec.faults if f in PLANTS]
    if not kinds or spec.cell.backend == "cpu" or not spec.tests:
        return {}
    return {"MNNREPRO_PLANT": f"{kinds[0]}@{spec.tests[0]}"}


def _batch(
    spec: SweepSpec,
    tests: list[str],
    sub: str,
    *,
    gdb: str | None,
    say: Callable[[str], None],
    what: str,
    limits: dict[str, float] | None = None,
    jobs: int | None = None,
    extra: tuple[dict[str, Any], ...] = (),
) -> None:
    limits = limits or {t: spec.limit(t) for t in tests}
    jobs = jobs or spec.jobs
    entries = []
    # Longest first: a test with a long limit (a [[slow]] row: op/lowMemory/mixedKernel takes 196 s on a CPU where
    # the rest of the sweep takes 2 minutes) starts at once and overlaps the short ones instead of running alone at
    # the end; the batch runs the plan in order. Stable: tests of one limit keep their order.
    for test in sorted(tests, key=lambda t: -limits[t]):
        out = _test_dir(spec, test, sub)
        if out.exists():
            shutil.rmtree(out)
        argv = test_argv(spec, test, out)
        if gdb:
            argv = [gdb, "-q", "-nx", "-batch", "-x", str(GDB_SCRIPT), "--args", *argv]
        entry: dict[str, Any] = {"name": test, "dir": str(out), "argv": argv, "timeout_s": limits[test]}
        entry["env"] = {"MNNREPRO_CRASH_DIR": str(out)}
        if spec.validated:  # each run its own settings file and log (opvalidation.py)
            layer_env, entry["validation"] = opvalidation.prepare_run(out, spec.vk_validation)
            entry["env"].update(layer_env)
        entries.append(entry)
    # The extra entries (the cell's validation canary) first: the batch runs its plan in order, so a batch that is
    # interrupted or runs out of time has still run the canary, and the tests it finished can count (issue 25).
    entries = [*extra, *entries]
    plan = spec.result_dir / f"plan{('-' + sub) if sub else ''}.json"
    plan.write_text(json.dumps({"jobs": jobs, "tests": entries}, indent=1))
    env = dict(spec.icd.env) if spec.icd else {}
    env.update(plant_env(spec))
    argv = ["python3", str(BATCH_SCRIPT), str(plan)]
    if "hide-libvulkan" in spec.faults:
        argv, fault_env = planted.hide_libvulkan(argv, spec.result_dir / ".fault", spec.runner.name)
        env.update(fault_env)
    # The batch as a whole; each test has its own limit.
    budget = (
        (sum(limits.values()) + sum(e["timeout_s"] for e in extra)) / jobs + max(limits.values(), default=0.0) + 120
    )
    with Progress(what, say=say) as progress:
        res = spec.runner.run(
            argv,
            env=env,
            writable=[spec.result_dir],
            timeout_s=budget,
            stdout_path=spec.result_dir / f"batch{('-' + sub) if sub else ''}.log",
            on_line=progress.feed,
        )
        if res.returncode != 0:
            progress.outcome = f"batch ended with exit {res.returncode}" + (" (time limit)" if res.timed_out else "")


def _test_dir(spec: SweepSpec, test: str, sub: str) -> Path:
    """Where one run of a test writes: its directory, or a subdirectory of it for a rerun ("rerun", "slow")."""
    return spec.result_dir / dirname(test) / sub if sub else spec.result_dir / dirname(test)


def _read(spec: SweepSpec, test: str, sub: str, limit: float) -> Outcome:
    directory = _test_dir(spec, test, sub)
    got = read_outcome(directory, test, spec.cell.backend)
    got = got or Outcome(test, "TIMEOUT", "did not finish: the batch was stopped", 0.0, None, directory=directory)
    got.limit_s = limit
    return got


def _killed_twice(limit_s: float, alone_s: float) -> str:
    """A TIMEOUT that is one: killed among others at its limit, and again when it ran alone under a longer one."""
    return f"killed at the {limit_s:.0f} s limit, and again alone at {alone_s:.0f} s"


def load_cell(
    result_dir: Path, tests: Sequence[str], backend: str, limits: dict[str, float] | None = None
) -> dict[str, Outcome]:
    """A sweep's outcomes read back from its cell directory (``ops run --cpu-from``, a cell an interrupt stopped),
    joined as sweep() joins them: the run alone that replaced a timeout, then the reruns in order. A test with no
    finished run there, or killed at its limit among others and not run again alone, is left out: it has no result
    (the caller names it). ``limits``: each test's limit, where known (else the run's own duration stands in)."""
    out: dict[str, Outcome] = {}
    for test in tests:
        directory = result_dir / dirname(test)
        first = read_outcome(directory, test, backend)
        if first is None:
            continue
        first.limit_s = (limits or {}).get(test, first.duration_s)
        if first.status == "TIMEOUT":
            alone = read_outcome(directory / "slow", test, backend)
            if alone is None:
                continue
            alone.slow_after_s, alone.limit_s = first.limit_s, alone.duration_s  # as sweep() marks the run alone
            if alone.status == "TIMEOUT":
                alone.reason = _killed_twice(first.limit_s, alone.limit_s)
            first = alone
        node = first
        for sub in ("rerun", *(f"rerun{k}" for k in range(2, 100))):
            again = read_outcome(directory / sub, test, backend)
            if again is None:
                break
            node.rerun = again
            node = again
            if again.crash is not None and first.crash is None:
                first.crash = again.crash
        out[test] = first
    return out


def sweep(spec: SweepSpec, *, say: Callable[[str], None] = print) -> dict[str, Outcome]:
    """Every test of the selection in its own process; a timeout again alone under a longer limit; then the reruns
    of each failure (crashes under gdb; up to a FLAKE row's reruns until the test passes)."""
    spec.result_dir.mkdir(parents=True, exist_ok=True)
    canary: tuple[dict[str, Any], ...] = ()
    if spec.validated and spec.canary_driver is not None:  # the cell's canary runs first in the batch (_batch)
        canary = (
            opvalidation.canary_entry(
                spec.result_dir, spec.canary_driver, spec.plugin, spec.vk_validation, min(spec.timeout_s, 300.0)
            ),
        )
    what = f"{spec.cell.id}: {len(spec.tests)} tests" + (" and the validation canary" if canary else "")
    _batch(spec, spec.tests, "", gdb=None, say=say, what=what, extra=canary)
    outcomes = {test: _read(spec, test, "", spec.limit(test)) for test in spec.tests}
    _rerun_timeouts(spec, outcomes, say)
    _rerun_failures(spec, outcomes, say)
    return outcomes


def _rerun_timeouts(spec: SweepSpec, outcomes: dict[str, Outcome], say: Callable[[str], None]) -> None:
    """A timeout runs again alone (one job: no other test takes its cores) under rerun_factor times its limit; the
    rerun replaces it (the killed run says nothing but "slow"), remembering the limit it was killed at."""
    slow = [t for t, o in outcomes.items() if o.status == "TIMEOUT"]
    if not slow:
        return
    limits = {t: outcomes[t].limit_s * spec.rerun_factor for t in slow}
    what = f"{spec.cell.id}: {len(slow)} timeout(s) again alone, {spec.rerun_factor:g}x the limit"
    _batch(spec, slow, "slow", gdb=None, say=say, what=what, limits=limits, jobs=1)
    for test in slow:
        first = outcomes[test]
        again = _read(spec, test, "slow", limits[test])
        again.slow_after_s = first.limit_s
        if again.status == "TIMEOUT":
            again.reason = _killed_twice(first.limit_s, limits[test])
        outcomes[test] = again


def _rerun_failures(spec: SweepSpec, outcomes: dict[str, Outcome], say: Callable[[str], None]) -> None:
    """Round k reruns every test whose last run failed or crashed and that may have k reruns (1, or a FLAKE row's
    count): so a flaky test gets its chance to pass, a plain failure is confirmed once."""
    for k in range(1, max([1, *spec.reruns.values()]) + 1):
        sub = "rerun" if k == 1 else f"rerun{k}"
        # Chosen before any of this round runs: a FAIL whose rerun crashed waits for the next round.
        due = {t: o.last().status for t, o in outcomes.items() if spec.reruns.get(t, 1) >= k}
        for status, gdb in (("FAIL", None), ("CRASH", spec.gdb_path)):
            again = [t for t, last in due.items() if last == status]
            if not again:
                continue
            limits = {t: outcomes[t].limit_s or spec.limit(t) for t in again}
            what = f"{spec.cell.id}: rerun {k} of {len(again)} {status}"
            _batch(spec, again, sub, gdb=gdb, say=say, what=what, limits=limits)
            for test in again:
                rerun = _read(spec, test, sub, limits[test])
                if rerun.status == "TIMEOUT" and rerun.returncode is None:
                    continue  # the batch was stopped: no rerun
                outcomes[test].last().rerun = rerun
                if rerun.crash is not None and outcomes[test].crash is None:
                    outcomes[test].crash = rerun.crash
