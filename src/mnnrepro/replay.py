"""Local replay of the GitHub Actions workflow: each job's `run:` steps as written, in a fresh Debian 12 container.

    python -m mnnrepro ci replay --list
    python -m mnnrepro ci replay --job checks
    python -m mnnrepro ci replay --job reproduce --matrix ref=3.3.0,session=vulkan_buffer,icd=lavapipe

A job's `needs` run first (their matrices narrowed to the values given with --matrix), so a reproduce job gets the
setup job's outputs and the build job's artifact the way it does on GitHub. What stands in for what:

- `container: debian:12` -> the Debian 12 image the suite bootstraps (mnnrepro/debian:bookworm-bootstrap), with
  the job's `options:`; the job's workspace, temp and home are inside the container (/__w, /github/home).
- `runs-on: ubuntu-*` -> that image with RUNNER_PACKAGES pre-installed (GitHub's ubuntu images have them: the
  replay says so when it makes that image); the job's workspace, temp and home are host directories mounted at
  the same paths (TMPDIR too: a runner's /tmp is the host's) and the host's Docker socket is mounted, so the
  suite's same-path mounts hold. The Docker daemon is the host's: images already there are found, not built.
- Every job container gets this machine's apt sources, pip configuration and CA bundle (read-only mounts), so
  the job's own `apt-get`/`pip` steps reach the same registries; MNN_GIT_URL points at --mirror when given.
- `uses:` -> actions/checkout: a `git clone` of this repository's HEAD (--worktree: the working tree, tracked and
  untracked files git does not ignore); actions/setup-python: the container's python3 in a venv on PATH;
  actions/cache (and /restore, /save): a directory per key under <state>/cache (restore-keys by prefix, saved
  at job end when the job succeeded and the key did not hit); upload/download-artifact: <state>/artifacts/<name>
  (file modes dropped, symlinks followed, hidden files left out unless asked for: as GitHub does). Any other
  `uses:` is an error.
- Expressions: the github, env, matrix, runner, steps, needs, job and strategy contexts and the usual functions;
  an unknown context, property or function is an error naming it, never an empty string.

Every step prints its name, exit code and duration; the replay ends with a table and exits 1 if a step failed.
Containers carry the label `mnnrepro.replay` and are always removed.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

from .errors import MnnReproError
from .fixtures import ROOT

WORKFLOW = Path(".github/workflows/mnnrepro.yml")
LABEL = "mnnrepro.replay"
BASE_IMAGE = "mnnrepro/debian:bookworm-bootstrap"
# The Debian 12 images a `container:` may name; the bootstrapped one stands in for them (no registry here).
DEBIAN_12 = {"debian:12", "debian:bookworm", "debian:12-slim", "debian:bookworm-slim"}
# What GitHub's ubuntu runner images have and a Debian 12 container lacks, for `runs-on` jobs.
RUNNER_PACKAGES = ("docker.io", "git", "python3", "python3-venv", "ca-certificates", "sudo", "npm")
RUNS_ON_PREFIX = "ubuntu-"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO_NAME = "mnnrepro"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_CONTAINER = "/usr/local/share/ca-certificates/mnnrepro-replay-host.crt"
MIRROR_IN_CONTAINER = "/mnt/mnn-mirror"
STATUS_FUNCTIONS = ("success", "failure", "cancelled", "always")


class ReplayError(MnnReproError):
    exit_code = 2
    title = "workflow replay"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnnrepro" / "replay"


# --------------------------------------------------------------------------------------------- expressions


class Strict(dict[str, Any]):
    """A context (or part of one) where a missing property is an error, not null: `matrix.sesion` is a typo."""

    def __init__(self, label: str, items: Mapping[str, Any] | None = None) -> None:
        super().__init__(items or {})
        self.label = label


Context = dict[str, Any]
_TOKEN = re.compile(
    r"\s*(?:(?P<num>0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<str>'(?:[^']|'')*')"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||[!<>()\[\].,*])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ReplayError(f"cannot parse expression {expr!r} at {expr[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def to_str(value: Any) -> str:
    """How GitHub writes a value into a string: null is empty, booleans lower case, objects as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2)
    return str(value)


def truthy(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    return value not in (None, False, 0, "")


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0.0
        try:
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        except ValueError:
            return math.nan
    return math.nan


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return a is b
    if a is None and b is None:
        return True
    if type(a) is type(b) and not isinstance(a, str):
        return bool(a == b)
    return _number(a) == _number(b)


def _compare(a: Any, b: Any) -> float:
    if isinstance(a, str) and isinstance(b, str):
        x, y = a.casefold(), b.casefold()
        return (x > y) - (x < y)
    x2, y2 = _number(a), _number(b)
    if math.isnan(x2) or math.isnan(y2):
        return math.nan
    return (x2 > y2) - (x2 < y2)


def _format(fmt: str, *args: Any) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        index = int(m.group(1))
        if index >= len(args):
            raise ReplayError(f"format({fmt!r}): no argument {index}")
        return to_str(args[index])

    return re.sub(r"\{\{|\}\}|\{(\d+)\}", repl, fmt)


class _Parser:
    """GitHub Actions expression syntax, evaluated while parsing (no side effects, so no short circuit needed)."""

    def __init__(self, expr: str, ctx: Context) -> None:
        self.expr = expr
        self.toks = _tokens(expr)
        self.i = 0
        self.ctx = ctx

    def error(self, what: str) -> ReplayError:
        return ReplayError(f"{what} in expression {self.expr!r}", hint="the replay supports what mnnrepro.yml uses")

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise self.error(f"expected {value or 'more'}")
        self.i += 1
        return tok

    def accept(self, value: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] == value:
            self.i += 1
            return True
        return False

    def parse(self) -> Any:
        value = self.or_()
        rest = self.peek()
        if rest is not None:
            raise self.error(f"unexpected {rest[1]!r}")
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.accept("||"):
            right = self.and_()
            value = value if truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.eq()
        while self.accept("&&"):
            right = self.eq()
            value = right if truthy(value) else value
        return value

    def eq(self) -> Any:
        value = self.cmp()
        while True:
            if self.accept("=="):
                value = _equal(value, self.cmp())
            elif self.accept("!="):
                value = not _equal(value, self.cmp())
            else:
                return value

    def cmp(self) -> Any:
        value = self.unary()
        while True:
            tok = self.peek()
            if tok is None or tok[0] != "op" or tok[1] not in ("<", "<=", ">", ">="):
                return value
            self.i += 1
            c = _compare(value, self.unary())
            value = (not math.isnan(c)) and {"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0}[tok[1]]

    def unary(self) -> Any:
        if self.accept("!"):
            return not truthy(self.unary())
        return self.postfix(self.primary())

    def postfix(self, value: Any) -> Any:
        while True:
            if self.accept("."):
                kind, name = self.take()
                if kind != "name":
                    raise self.error(f"expected a property name after '.', got {name!r}")
                value = self.member(value, name)
            elif self.accept("["):
                key = self.or_()
                self.take("]")
                value = self.member(value, key)
            else:
                return value

    def member(self, value: Any, key: Any) -> Any:
        if isinstance(value, list):
            n = _number(key)
            return value[int(n)] if not math.isnan(n) and 0 <= int(n) < len(value) else None
        if isinstance(value, dict):
            if not isinstance(key, str):
                key = to_str(key)
            for k, v in value.items():
                if k.casefold() == key.casefold():
                    return v
            if isinstance(value, Strict):
                raise self.error(f"unknown property {value.label}.{key}")
            return None
        if value is None:
            return None
        raise self.error(f"property {to_str(key)!r} of a {type(value).__name__}")

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            return float(int(text, 16)) if text.lower().startswith("0x") else float(text)
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "op" and text == "(":
            value = self.or_()
            self.take(")")
            return value
        if kind != "name":
            raise self.error(f"unexpected {text!r}")
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low == "null":
            return None
        if self.accept("("):
            args: list[Any] = []
            if not self.accept(")"):
                args.append(self.or_())
                while self.accept(","):
                    args.append(self.or_())
                self.take(")")
            return self.call(low, text, args)
        for name, value in self.ctx.items():
            if name.casefold() == low and not name.startswith("__"):
                return value
        known = ", ".join(sorted(k for k in self.ctx if not k.startswith("__")))
        raise self.error(f"unknown context {text!r} (known here: {known})")

    def call(self, low: str, name: str, args: list[Any]) -> Any:
        status = str(self.ctx.get("__status", "success"))
        if low in STATUS_FUNCTIONS:
            if args:
                raise self.error(f"{name}() takes no arguments")
            return {
                "always": True,
                "success": status == "success",
                "failure": status == "failure",
                "cancelled": status == "cancelled",
            }[low]
        if low == "contains" and len(args) == 2:
            hay, needle = args
            if isinstance(hay, list):
                return any(_equal(x, needle) for x in hay)
            return to_str(needle).casefold() in to_str(hay).casefold()
        if low == "startswith" and len(args) == 2:
            return to_str(args[0]).casefold().startswith(to_str(args[1]).casefold())
        if low == "endswith" and len(args) == 2:
            return to_str(args[0]).casefold().endswith(to_str(args[1]).casefold())
        if low == "format" and args:
            return _format(to_str(args[0]), *args[1:])
        if low == "join" and len(args) in (1, 2):
            sep = to_str(args[1]) if len(args) == 2 else ","
            return sep.join(to_str(x) for x in args[0]) if isinstance(args[0], list) else to_str(args[0])
        if low == "tojson" and len(args) == 1:
            return json.dumps(args[0], indent=2)
        if low == "fromjson" and len(args) == 1:
            try:
                return _from_json(json.loads(to_str(args[0])))
            except json.JSONDecodeError as exc:
                raise self.error(f"fromJSON of {to_str(args[0])!r}: {exc}") from None
        if low == "hashfiles" and args:
            hasher = self.ctx.get("__hash_files")
            if not callable(hasher):
                raise self.error("hashFiles() where there is no workspace")
            return hasher([to_str(a) for a in args])
        raise self.error(f"unknown function {name}() with {len(args)} argument(s)")


def _from_json(value: Any) -> Any:
    """JSON numbers are floats in expressions (`fromJSON('1') == 1.0`)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return {str(k): _from_json(v) for k, v in dict(value).items()}


def evaluate(expr: str, ctx: Context) -> Any:
    """The value of one expression (the text inside `${{ }}`)."""
    return _Parser(expr, ctx).parse()


def _segments(text: str) -> Iterator[tuple[bool, str]]:
    """(is_expression, text) pieces of a string with `${{ ... }}` in it; `}}` inside a '...' literal is kept."""
    pos = 0
    while True:
        start = text.find("${{", pos)
        if start < 0:
            if pos < len(text):
                yield False, text[pos:]
            return
        if start > pos:
            yield False, text[pos:start]
        i, quoted = start + 3, False
        while i < len(text):
            if text[i] == "'":
                quoted = not quoted
            elif not quoted and text.startswith("}}", i):
                break
            i += 1
        else:
            raise ReplayError(f"unterminated ${{{{ in {text!r}")
        yield True, text[start + 3 : i]
        pos = i + 2


def expand(text: str, ctx: Context) -> str:
    """A string with every `${{ expr }}` replaced by its value."""
    return "".join(to_str(evaluate(piece, ctx)) if is_expr else piece for is_expr, piece in _segments(text))


def expand_value(value: Any, ctx: Context) -> Any:
    """A YAML value with expressions evaluated: a string that is exactly one `${{ }}` keeps its type (lists from
    fromJSON for a matrix), other strings are expanded, lists and mappings are walked."""
    if isinstance(value, str):
        pieces = list(_segments(value))
        if len(pieces) == 1 and pieces[0][0]:
            return evaluate(pieces[0][1], ctx)
        return expand(value, ctx)
    if isinstance(value, list):
        return [expand_value(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: expand_value(v, ctx) for k, v in value.items()}
    return value


def evaluate_if(condition: Any, ctx: Context) -> bool:
    """A step's or job's `if:`; without a status function it means `success() && (condition)`, as on GitHub."""
    if condition is None:
        condition = "success()"
    if isinstance(condition, bool):
        return condition and evaluate("success()", ctx) is True
    text = str(condition).strip()
    pieces = list(_segments(text))
    if len(pieces) == 1 and pieces[0][0]:
        text = pieces[0][1].strip()
    elif any(is_expr for is_expr, _ in pieces):
        raise ReplayError(f"if: {condition!r} mixes text and ${{{{ }}}}")
    if not re.search(r"\b(" + "|".join(STATUS_FUNCTIONS) + r")\s*\(", text, re.I):
        text = f"success() && ({text})"
    return truthy(evaluate(text, ctx))


# ------------------------------------------------------------------------------------------------ the model


def load_workflow(text: str) -> dict[str, Any]:
    """The workflow as a mapping (PyYAML, from the `ci` extra). YAML 1.1 reads the key `on` as true."""
    try:
        yaml: Any = importlib.import_module("yaml")
    except ImportError as exc:
        raise ReplayError("PyYAML is not installed", hint="pip install -e '.[ci]'") from exc
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
        raise ReplayError("the workflow has no jobs: mapping")
    if True in data:
        data["on"] = data.pop(True)
    return data


def expand_matrix(strategy: Any, ctx: Context) -> list[dict[str, Any]]:
    """A job's matrix combinations (include/exclude as GitHub applies them); [{}] for a job without a matrix."""
    if not isinstance(strategy, dict) or "matrix" not in strategy:
        return [{}]
    matrix = expand_value(strategy["matrix"], ctx)
    if not isinstance(matrix, dict):
        raise ReplayError(f"strategy.matrix is not a mapping: {matrix!r}")
    include = matrix.pop("include", []) or []
    exclude = matrix.pop("exclude", []) or []
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise ReplayError(f"matrix.{key} is not a non-empty list: {values!r}")
    keys = list(matrix)
    combos = [dict(zip(keys, values, strict=True)) for values in product(*matrix.values())] if keys else []
    combos = [c for c in combos if not any(all(_equal(c.get(k), v) for k, v in ex.items()) for ex in exclude)]
    originals = set(keys)
    for entry in include:
        matched = False
        for combo in combos:
            if all(_equal(combo[k], v) for k, v in entry.items() if k in originals):
                combo.update({k: v for k, v in entry.items() if k not in originals})
                matched = True
        if not matched:
            combos.append(dict(entry))
    if not combos:
        raise ReplayError("the matrix has no combination")
    return combos


def select_matrix(combos: list[dict[str, Any]], wanted: Mapping[str, str], job: str) -> list[dict[str, Any]]:
    """The combinations whose values equal those asked for (keys this job's matrix lacks are ignored)."""
    keys = {k for c in combos for k in c}
    chosen = [c for c in combos if all(to_str(c[k]) == v for k, v in wanted.items() if k in keys)]
    if not chosen:
        have = "; ".join(",".join(f"{k}={to_str(v)}" for k, v in c.items()) for c in combos)
        raise ReplayError(f"no combination of {job}'s matrix matches {dict(wanted)}", hint=f"combinations: {have}")
    return chosen


def parse_matrix_arg(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ReplayError(f"--matrix wants key=value[,key=value...], got {item!r}")
        out[key.strip()] = value.strip()
    return out


def parse_env_file(text: str, what: str = "GITHUB_ENV") -> dict[str, str]:
    """NAME=value lines and NAME<<DELIMITER heredocs, as $GITHUB_ENV and $GITHUB_OUTPUT take them."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if heredoc > 0 and (eq < 0 or heredoc < eq):
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            body: list[str] = []
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ReplayError(f"{what}: {name}<<{delimiter} has no closing {delimiter!r}")
            i += 1
            out[name] = "\n".join(body)
        elif eq > 0:
            out[line[:eq]] = line[eq + 1 :]
        else:
            raise ReplayError(f"{what}: cannot read line {line!r} (want NAME=value or NAME<<DELIMITER)")
    return out


def parse_path_file(text: str) -> list[str]:
    """$GITHUB_PATH: one directory a line, each put in front of PATH for the later steps."""
    return [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]


# `uses:` -> the local equivalent, and the `with:` inputs each one honours (anything else is an error; inputs
# that change nothing locally, such as retention-days, are accepted and ignored).
LOCAL_ACTIONS: dict[str, tuple[str, frozenset[str]]] = {
    "actions/checkout": ("checkout", frozenset({"fetch-depth", "persist-credentials", "clean"})),
    "actions/setup-python": ("setup-python", frozenset({"python-version", "check-latest"})),
    "actions/cache": ("cache", frozenset({"path", "key", "restore-keys", "fail-on-cache-miss", "lookup-only"})),
    "actions/cache/restore": ("cache-restore", frozenset({"path", "key", "restore-keys", "fail-on-cache-miss"})),
    "actions/cache/save": ("cache-save", frozenset({"path", "key"})),
    "actions/upload-artifact": (
        "upload-artifact",
        frozenset(
            {
                "name",
                "path",
                "if-no-files-found",
                "retention-days",
                "compression-level",
                "overwrite",
                "include-hidden-files",
            }
        ),
    ),
    "actions/download-artifact": ("download-artifact", frozenset({"name", "path"})),
}


def local_action(uses: str, inputs: Mapping[str, Any] | None = None) -> str:
    """Which local equivalent stands in for `uses:` (checkout, setup-python, cache, ...), or ReplayError."""
    name, sep, version = uses.partition("@")
    if not sep or not version:
        raise ReplayError(f"uses: {uses!r} has no @version")
    entry = LOCAL_ACTIONS.get(name.lower())
    if entry is None:
        raise ReplayError(
            f"no local equivalent for uses: {uses}", hint=f"the replay knows {', '.join(sorted(LOCAL_ACTIONS))}"
        )
    kind, known = entry
    unknown = sorted(set(inputs or {}) - known)
    if unknown:
        raise ReplayError(f"uses: {uses}: input(s) the replay does not honour: {', '.join(unknown)}")
    return kind


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """@actions/glob's pattern: `*` within a path segment, `**` across segments, `?` one character."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out.rstrip("/") + r"(?:/.*)?\Z")


def search_root(pattern: str) -> str:
    """The part of a pattern before its first segment with a wildcard (where the search starts)."""
    parts = PurePosixPath(pattern).parts
    literal: list[str] = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        literal.append(part)
    return str(PurePosixPath(*literal)) if literal else "/"


@dataclass(frozen=True)
class ArtifactPlan:
    root: str  # files are stored relative to this directory
    files: tuple[str, ...]  # absolute paths


def plan_upload(patterns: Sequence[str], found: Sequence[str], *, include_hidden: bool) -> ArtifactPlan:
    """upload-artifact's choice of files and root: absolute `patterns` (`!` excludes), `found` the files under
    their search roots (symlinks followed). Root: the least common ancestor of the search roots, or the parent of
    a single file named without a wildcard."""
    includes = [p for p in patterns if not p.startswith("!")]
    excludes = [_glob_regex(p[1:]) for p in patterns if p.startswith("!")]
    roots = [search_root(p) for p in includes]
    regexes = [_glob_regex(p) for p in includes]

    def hidden(path: str) -> bool:
        # @actions/glob walks from each search root and skips any item (the root included) named ".*".
        for r in roots:
            if path == r or path.startswith(r.rstrip("/") + "/"):
                parts = [PurePosixPath(r).name, *PurePosixPath(os.path.relpath(path, r)).parts]
                if any(p.startswith(".") and p not in (".", "..") for p in parts):
                    return True
        return False

    files = []
    for path in sorted(set(found)):
        if not any(r.match(path) for r in regexes) or any(r.match(path) for r in excludes):
            continue
        if not include_hidden and hidden(path):
            continue
        files.append(path)
    if len(roots) == 1 and len(files) == 1 and files[0] == roots[0]:
        root = str(PurePosixPath(files[0]).parent)
    else:
        root = os.path.commonpath(roots) if roots else "/"
    return ArtifactPlan(root=root, files=tuple(files))


def cache_dir_name(key: str) -> str:
    return quote(key, safe="")


def find_cache(store: Path, key: str, restore_keys: Sequence[str], paths: Sequence[str]) -> tuple[str, Path] | None:
    """actions/cache's lookup: the exact key, else the newest entry whose key starts with each restore key in
    turn; only entries saved for the same paths count (GitHub's cache version)."""
    entries: list[tuple[float, str, Path]] = []
    if store.is_dir():
        for d in store.iterdir():
            meta = d / "meta.json"
            if not meta.is_file() or not (d / "cache.tar").is_file():
                continue
            info = json.loads(meta.read_text())
            if list(info.get("paths", [])) == list(paths):
                entries.append((float(info.get("created", 0)), unquote(d.name), d))
    for k in [key]:
        for _, name, d in entries:
            if name == k:
                return name, d
    for prefix in restore_keys:
        hits = sorted((e for e in entries if e[1].startswith(prefix)), reverse=True)
        if hits:
            return hits[0][1], hits[0][2]
    return None


# ------------------------------------------------------------------------------------------------ containers


def _docker(*args: str, check: bool = True, capture: bool = True, stdin: bytes | None = None) -> str:
    res = subprocess.run(["docker", *args], input=stdin, capture_output=capture)
    if check and res.returncode != 0:
        err = (res.stderr or b"").decode(errors="replace").strip()
        raise ReplayError(f"docker {' '.join(args[:3])} ... failed ({res.returncode}): {err[-600:]}")
    return (res.stdout or b"").decode(errors="replace") if capture else ""


def registry_mounts() -> list[tuple[str, str, bool]]:
    """This machine's apt sources, pip configuration and CA bundle, for every job container (read-only). The CA
    bundle goes where update-ca-certificates adds it to the container's own (a job installing ca-certificates
    keeps it), and is copied to the bundle's usual path when the container starts."""
    mounts: list[tuple[str, str, bool]] = []
    for src in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        mounts.append((str(src), str(src), True))
    classic = Path("/etc/apt/sources.list")
    # The bootstrapped image's own sources.list names the same mirror; hide it unless this machine has one.
    mounts.append((str(classic) if classic.is_file() else "/dev/null", str(classic), True))
    for path in (Path("/etc/pip.conf"), Path("/etc/xdg/pip")):
        if path.exists():
            mounts.append((str(path), str(path), True))
    if HOST_CA.is_file():
        mounts.append((str(HOST_CA), CA_IN_CONTAINER, True))
    return mounts


PREPARE = (
    f'if [ -f {CA_IN_CONTAINER} ]; then mkdir -p /etc/ssl/certs && cp {CA_IN_CONTAINER} "{HOST_CA}"; fi; '
    'if [ "$#" -gt 0 ]; then mkdir -p "$@"; fi'
)


class Container:
    """One job's container: created with `sleep infinity`, commands run with `docker exec`, always removed."""

    def __init__(
        self,
        image: str,
        *,
        labels: Mapping[str, str],
        mounts: Sequence[tuple[str, str, bool]] = (),
        options: Sequence[str] = (),
    ) -> None:
        self.image, self.labels, self.mounts, self.options = image, dict(labels), list(mounts), list(options)
        self.id = ""

    def __enter__(self) -> Container:
        args = ["create", "--init", "--entrypoint", "sleep"]
        for k, v in self.labels.items():
            args += ["--label", f"{k}={v}"]
        for src, dst, ro in self.mounts:
            args += ["-v", f"{src}:{dst}" + (":ro" if ro else "")]
        args += [*self.options, self.image, "infinity"]
        self.id = _docker(*args).strip()
        _docker("start", self.id)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.id:
            _docker("rm", "-f", self.id, check=False)

    def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        cmd = ["docker", "exec", "-i"]
        for k, v in (env or {}).items():
            cmd += ["-e", f"{k}={v}"]
        if workdir:
            cmd += ["-w", workdir]
        res = subprocess.run([*cmd, self.id, *argv], input=stdin or b"", capture_output=True)
        if check and res.returncode != 0:
            raise ReplayError(
                f"in the job container: {shlex.join(argv)[:200]} exited {res.returncode}: "
                + res.stderr.decode(errors="replace").strip()[-600:]
            )
        return res

    def stream(
        self, argv: Sequence[str], *, env: Mapping[str, str], workdir: str | None, log: Callable[[str], None]
    ) -> int:
        """Run a command, passing its output through line by line; its exit code."""
        cmd = ["docker", "exec"]
        for k, v in env.items():
            cmd += ["-e", f"{k}={v}"]
        if workdir:
            cmd += ["-w", workdir]
        with subprocess.Popen([*cmd, self.id, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                log(raw.decode(errors="replace").rstrip("\n"))
            return proc.wait()

    def write(self, path: str, data: bytes) -> None:
        self.exec(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path], stdin=data)

    def read(self, path: str) -> str:
        return self.exec(["cat", path]).stdout.decode(errors="replace")

    def put_tree(self, src: Path, dest: str) -> None:
        """Copy a host directory's content into dest (modes kept, as a checkout or an unpacked tar has them)."""
        with tempfile.TemporaryFile() as tmp:
            subprocess.run(["tar", "-C", str(src), "-cf", "-", "."], stdout=tmp, check=True)
            tmp.seek(0)
            res = subprocess.run(
                ["docker", "exec", "-i", self.id, "sh", "-c", 'mkdir -p "$1" && tar -C "$1" -xf -', "sh", dest],
                stdin=tmp,
                capture_output=True,
            )
        if res.returncode != 0:
            raise ReplayError(f"copying {src} into the container failed: {res.stderr.decode(errors='replace')}")

    def get_tar(self, argv: Sequence[str], out: Path, stdin: bytes = b"") -> int:
        with open(out, "wb") as f:
            res = subprocess.run(
                ["docker", "exec", "-i", self.id, *argv], input=stdin, stdout=f, stderr=subprocess.PIPE
            )
        if res.returncode != 0:
            sys.stdout.write(res.stderr.decode(errors="replace"))
        return res.returncode


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


_SELF_HOSTED = (
    "{name} runs on a self-hosted runner (runs-on: {runs_on}): the replay cannot run it. Its containers stand in "
    "for GitHub's ubuntu-* runners and have no GPU (nor the machine's own Vulkan or OpenCL driver)"
)
_SELF_HOSTED_HINT = (
    "run the job's commands by hand on the GPU machine (README, Real GPUs): nox -s doctor, then the sessions with "
    "-- --icd host --runner host"
)


def self_hosted(job: Mapping[str, Any]) -> bool:
    """A job for a self-hosted runner (the GPU jobs): nothing here stands in for that machine."""
    runs_on = job.get("runs-on")
    labels = [runs_on] if isinstance(runs_on, str) else list(runs_on or [])
    return "self-hosted" in (str(label) for label in labels)


def job_image(job: Mapping[str, Any], say: Callable[[str], None]) -> tuple[str, list[str], bool]:
    """(image, docker create options, runs on the host) for a job."""
    container = job.get("container")
    if container is not None:
        spec = {"image": container} if isinstance(container, str) else dict(container)
        unknown = sorted(set(spec) - {"image", "options"})
        if unknown:
            raise ReplayError(f"container: {', '.join(unknown)} is not supported by the replay")
        image = str(spec["image"])
        options = shlex.split(str(spec.get("options", "")))
        if not image_exists(image):
            if image not in DEBIAN_12:
                raise ReplayError(f"container image {image} is not on this machine (no registry)")
            if not image_exists(BASE_IMAGE):
                raise ReplayError(
                    f"{BASE_IMAGE} (the stand-in for {image}) is missing",
                    hint="python -m mnnrepro image bootstrap (root), or wait for the suite to make it",
                )
            say(f"container {image}: using {BASE_IMAGE} (Debian 12 bootstrapped from this machine's mirror)")
            image = BASE_IMAGE
        return image, options, False
    runs_on = job.get("runs-on")
    labels = [runs_on] if isinstance(runs_on, str) else list(runs_on or [])
    if self_hosted(job):
        raise ReplayError(
            _SELF_HOSTED.format(name=job.get("name", "this job"), runs_on=runs_on), hint=_SELF_HOSTED_HINT
        )
    if not labels or not all(str(label).startswith(RUNS_ON_PREFIX) for label in labels):
        raise ReplayError(f"runs-on: {runs_on!r}: the replay stands in for {RUNS_ON_PREFIX}* runners only")
    return runner_image(say), [], True


def runner_image(say: Callable[[str], None]) -> str:
    """The stand-in for GitHub's ubuntu image: Debian 12 + RUNNER_PACKAGES, made once and kept (labelled)."""
    if not image_exists(BASE_IMAGE):
        raise ReplayError(f"{BASE_IMAGE} is missing", hint="python -m mnnrepro image bootstrap (root)")
    base_id = _docker("image", "inspect", "-f", "{{.Id}}", BASE_IMAGE).strip()
    key = hashlib.sha256(f"2:{base_id}:{' '.join(RUNNER_PACKAGES)}".encode()).hexdigest()[:16]
    tag = f"mnnrepro/replay-runner:{key}"
    if image_exists(tag):
        return tag
    say(
        f"making {tag}: {BASE_IMAGE} + apt-get install {' '.join(RUNNER_PACKAGES)} (GitHub's ubuntu runners have "
        "these preinstalled; this replay pre-installs them for runs-on jobs)"
    )
    with Container(BASE_IMAGE, labels={LABEL: "runner-image"}, mounts=registry_mounts()) as c:
        c.exec(["sh", "-c", PREPARE, "sh"])
        res = c.exec(
            [
                "sh",
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
                + " ".join(RUNNER_PACKAGES),
            ],
            check=False,
        )
        if res.returncode != 0:
            raise ReplayError("installing the runner packages failed: " + res.stdout.decode(errors="replace")[-800:])
        changes = [f"LABEL {LABEL}=runner-image", "ENTRYPOINT []", 'CMD ["bash"]']
        _docker("commit", *(x for change in changes for x in ("--change", change)), c.id, tag)
    return tag


# ------------------------------------------------------------------------------------------------- the replay


@dataclass
class StepResult:
    job: str
    step: str
    rc: int | None  # None: skipped
    seconds: float
    note: str = ""
    counts: bool = True  # False: continue-on-error


@dataclass
class JobResult:
    job: str
    status: str  # success, failure, skipped
    outputs: dict[str, str] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)


@dataclass
class Options:
    repo: Path = ROOT
    workflow: Path = WORKFLOW
    worktree: bool = False
    event: str = "push"
    state_dir: Path = field(default_factory=default_state_dir)
    mirror: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    keep_work: bool = False


class Replay:
    def __init__(self, opts: Options, say: Callable[[str], None] = print) -> None:
        self.opts = opts
        self.say = say
        self.run_id = str(int(time.time()))
        self.run_dir = opts.state_dir / "runs" / self.run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.uploaded: set[str] = set()
        self._checkout: Path | None = None
        self._runner_lock: Any = None
        self.workflow = load_workflow(self.workflow_text())
        self.sha = self._git("rev-parse", "HEAD").strip()

    def _git(self, *args: str) -> str:
        res = subprocess.run(["git", "-C", str(self.opts.repo), *args], capture_output=True, text=True)
        if res.returncode != 0:
            raise ReplayError(f"git {' '.join(args)} in {self.opts.repo}: {res.stderr.strip()}")
        return res.stdout

    def workflow_text(self) -> str:
        """The workflow as the checkout the jobs get has it (HEAD, or the working tree with --worktree)."""
        if self.opts.worktree:
            return (self.opts.repo / self.opts.workflow).read_text()
        return self._git("show", f"HEAD:{self.opts.workflow.as_posix()}")

    def checkout_tree(self) -> Path:
        """This repository as actions/checkout would give it: a clone of HEAD, plus the working tree's tracked and
        untracked-but-not-ignored files (and its deletions) with --worktree."""
        if self._checkout is None:
            dest = self.run_dir / "checkout"
            self._git("clone", "-q", "--no-hardlinks", str(self.opts.repo), str(dest))
            if self.opts.worktree:
                for rel in filter(None, self._git("ls-files", "-z", "-co", "--exclude-standard").split("\0")):
                    src, dst = self.opts.repo / rel, dest / rel
                    if src.is_file() or src.is_symlink():
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        if dst.is_symlink() or dst.exists():
                            dst.unlink()
                        shutil.copy2(src, dst, follow_symlinks=False)
                for rel in filter(None, self._git("ls-files", "-z", "-d").split("\0")):
                    (dest / rel).unlink(missing_ok=True)
            self._checkout = dest
        return self._checkout

    def runner_dir(self) -> Path:
        """Where runs-on jobs keep their workspace, temp and home: one place, the same for every job and every
        replay (as /home/runner is on GitHub, so cached paths such as runner.temp mean the same next time);
        emptied before each job, and held by one replay at a time."""
        if self._runner_lock is None:
            self.opts.state_dir.mkdir(parents=True, exist_ok=True)
            lock = open(self.opts.state_dir / "runner.lock", "w")  # held for the replay's life
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise ReplayError(f"another replay is using {self.opts.state_dir / 'runner'}") from None
            self._runner_lock = lock
        return self.opts.state_dir / "runner"

    def github(self, job_id: str, workspace: str) -> Strict:
        return Strict(
            "github",
            {
                "event_name": self.opts.event,
                "event": {},
                "ref": "refs/heads/main",
                "ref_name": "main",
                "sha": self.sha,
                "repository": f"local/{REPO_NAME}",
                "repository_owner": "local",
                "run_id": self.run_id,
                "run_number": "1",
                "run_attempt": "1",
                "workflow": str(self.workflow.get("name", "")),
                "job": job_id,
                "workspace": workspace,
                "server_url": "https://github.com",
                "actor": "replay",
                "head_ref": "",
                "base_ref": "",
            },
        )

    # -- planning ----------------------------------------------------------------------------------------

    def jobs(self) -> dict[str, dict[str, Any]]:
        return dict(self.workflow["jobs"])

    @staticmethod
    def needs_of(job: Mapping[str, Any]) -> list[str]:
        needs = job.get("needs", [])
        return [needs] if isinstance(needs, str) else list(needs)

    def plan(self, targets: Sequence[str]) -> list[str]:
        jobs, order = self.jobs(), []

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if name not in jobs:
                raise ReplayError(f"no job {name!r} in {self.opts.workflow}", hint=f"jobs: {', '.join(jobs)}")
            if name in trail:
                raise ReplayError(f"needs cycle: {' -> '.join((*trail, name))}")
            for dep in self.needs_of(jobs[name]):
                visit(dep, (*trail, name))
            if name not in order:
                order.append(name)

        for target in targets:
            visit(target, ())
        for name in order:  # said before anything runs, not after the jobs it needs
            if self_hosted(jobs[name]):
                raise ReplayError(
                    _SELF_HOSTED.format(name=f"job {name!r}", runs_on=jobs[name].get("runs-on")),
                    hint=_SELF_HOSTED_HINT,
                )
        return order

    def describe(self) -> list[str]:
        lines = []
        for name, job in self.jobs().items():
            container = job.get("container")
            image = container.get("image") if isinstance(container, dict) else container
            where = f"container {image}" if container else f"runs-on {job.get('runs-on')}"
            matrix = (job.get("strategy") or {}).get("matrix", {})
            axes = ", ".join(f"{k}={v}" for k, v in matrix.items()) if isinstance(matrix, dict) else str(matrix)
            lines.append(f"{name}: {job.get('name', name)}")
            lines.append(f"    {where}; needs: {', '.join(self.needs_of(job)) or '-'}")
            if axes:
                lines.append(f"    matrix: {axes}")
            if "if" in job:
                lines.append(f"    if: {job['if']}")
        return lines

    # -- running -----------------------------------------------------------------------------------------

    def run(self, targets: Sequence[str], wanted: Mapping[str, str]) -> list[JobResult]:
        jobs = self.jobs()
        order = self.plan(targets)
        axes: set[str] = set()
        for name in order:
            matrix = (jobs[name].get("strategy") or {}).get("matrix") or {}
            if isinstance(matrix, dict):
                axes |= {k for k in matrix if k not in ("include", "exclude")}
                axes |= {k for entry in matrix.get("include") or [] for k in entry}
        unknown = sorted(set(wanted) - axes)
        if unknown:
            raise ReplayError(f"--matrix {', '.join(unknown)}: no such axis in {', '.join(order)}")
        done: dict[str, list[JobResult]] = {}
        results: list[JobResult] = []
        for name in order:
            job = jobs[name]
            needs = {dep: _merge(done[dep]) for dep in self.needs_of(job)}
            ctx: Context = {
                "github": self.github(name, ""),
                "needs": _needs_context(needs),
                "vars": Strict("vars"),
                "inputs": Strict("inputs"),
                "__status": "success" if all(r.status == "success" for r in needs.values()) else "failure",
            }
            combos = expand_matrix(job.get("strategy"), ctx)
            if combos != [{}]:
                combos = select_matrix(combos, wanted, name)
            done[name] = []
            for combo in combos:
                ctx_m = {**ctx, "matrix": Strict("matrix", combo)}
                label = name + (f" ({', '.join(to_str(v) for v in combo.values())})" if combo else "")
                if not evaluate_if(job.get("if"), ctx_m):
                    self.say(f"== job {label}: skipped (if: {job.get('if', 'success()')})")
                    result = JobResult(label, "skipped", steps=[StepResult(label, "(job skipped by if:)", None, 0.0)])
                else:
                    result = JobRun(self, name, job, combo, needs, label).run()
                done[name].append(result)
                results.append(result)
        return results


def _merge(results: list[JobResult]) -> JobResult:
    """A matrix job seen from its dependants: failed if any combination failed; outputs from the last one."""
    status = "success"
    if any(r.status == "failure" for r in results):
        status = "failure"
    elif results and all(r.status == "skipped" for r in results):
        status = "skipped"
    outputs: dict[str, str] = {}
    for r in results:
        outputs.update({k: v for k, v in r.outputs.items() if v != ""})
    return JobResult(results[0].job if results else "", status, outputs)


def _needs_context(needs: Mapping[str, JobResult]) -> Strict:
    return Strict(
        "needs",
        {name: Strict(f"needs.{name}", {"result": r.status, "outputs": dict(r.outputs)}) for name, r in needs.items()},
    )


class JobRun:
    def __init__(
        self,
        replay: Replay,
        name: str,
        job: dict[str, Any],
        combo: dict[str, Any],
        needs: dict[str, JobResult],
        label: str,
    ) -> None:
        self.replay, self.name, self.job, self.combo, self.needs, self.label = replay, name, job, combo, needs, label
        self.result = JobResult(label, "success")
        self.steps_ctx = Strict("steps")
        self.github_env: dict[str, str] = {}
        self.paths: list[str] = []
        self.post: list[Callable[[], int]] = []
        self.post_names: list[str] = []
        self.summary: list[str] = []
        self.container: Container | None = None
        self.home = self.workspace = self.temp = self.tool_cache = self.tmpdir = ""
        self.log_path = replay.run_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.log"

    # -- output --------------------------------------------------------------------------------------------

    def log(self, line: str) -> None:
        self.replay.say(line)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    # -- context -------------------------------------------------------------------------------------------

    def ctx(self, env: Mapping[str, str]) -> Context:
        return {
            "github": self.replay.github(self.name, self.workspace),
            "env": Strict("env", env),
            "matrix": Strict("matrix", self.combo),
            "needs": _needs_context(self.needs),
            "runner": Strict(
                "runner",
                {
                    "os": "Linux",
                    "arch": "X64",
                    "name": "mnnrepro-replay",
                    "temp": self.temp,
                    "tool_cache": self.tool_cache,
                    "environment": "github-hosted",
                    "debug": "",
                },
            ),
            "steps": self.steps_ctx,
            "job": Strict("job", {"status": self.result.status}),
            "strategy": Strict("strategy", {"fail-fast": True, "job-index": 0, "job-total": 1, "max-parallel": 1}),
            "vars": Strict("vars"),
            "inputs": Strict("inputs"),
            "__status": self.result.status,
            "__hash_files": self.hash_files,
        }

    def hash_files(self, patterns: list[str]) -> str:
        """hashFiles(): sha256 over the sha256 of each matching workspace file, in path order; '' for none."""
        assert self.container is not None
        listing = self.container.exec(
            ["sh", "-c", 'cd "$1" && find . -path ./.git -prune -o -type f -print0', "sh", self.workspace]
        )
        files = sorted(p[2:] for p in listing.stdout.decode().split("\0") if p.startswith("./"))
        regexes = [_glob_regex(p) for p in patterns]
        chosen = [f for f in files if any(r.match(f) for r in regexes)]
        if not chosen:
            return ""
        sums = self.container.exec(["sha256sum", "--", *chosen], workdir=self.workspace).stdout.decode()
        digest = hashlib.sha256()
        for line in sums.splitlines():
            digest.update(bytes.fromhex(line.split()[0]))
        return digest.hexdigest()

    def base_env(self) -> dict[str, str]:
        env = {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": self.workspace,
            "GITHUB_EVENT_NAME": self.replay.opts.event,
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_SHA": self.replay.sha,
            "GITHUB_REPOSITORY": f"local/{REPO_NAME}",
            "GITHUB_RUN_ID": self.replay.run_id,
            "GITHUB_RUN_NUMBER": "1",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_JOB": self.name,
            "GITHUB_WORKFLOW": str(self.replay.workflow.get("name", "")),
            "GITHUB_SERVER_URL": "https://github.com",
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_TEMP": self.temp,
            "RUNNER_TOOL_CACHE": self.tool_cache,
            "HOME": self.home,
        }
        if self.tmpdir:
            env["TMPDIR"] = self.tmpdir
        if self.replay.opts.mirror is not None:
            env["MNN_GIT_URL"] = MIRROR_IN_CONTAINER
            # The mirror belongs to whoever owns it on this machine; git refuses foreign repositories otherwise.
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"})
        env.update(self.replay.opts.env)
        return env

    # -- the job -------------------------------------------------------------------------------------------

    def run(self) -> JobResult:
        self.log(f"== job {self.label}: {self.job.get('name', self.name)}")
        start = time.monotonic()
        timeout_s = float(self.job.get("timeout-minutes", 360)) * 60
        try:
            image, options, on_host = job_image(self.job, self.log)
        except ReplayError as exc:
            self.log(exc.render())
            self.record("(replay) set up job", 1, time.monotonic() - start, exc.message)
            self.result.status = "failure"
            return self.result
        work = self.replay.runner_dir() if on_host else Path()
        mounts = registry_mounts()
        if on_host:
            shutil.rmtree(work, ignore_errors=True)
            if work.exists():
                raise ReplayError(f"cannot empty {work} (files of another user?)", hint=f"sudo rm -rf {work}")
            # Host directories at the same paths, as on a runner: the suite mounts them into its own containers.
            self.home = str(work / "home")
            self.workspace = str(work / "work" / REPO_NAME / REPO_NAME)
            self.temp = str(work / "work" / "_temp")
            self.tool_cache = str(work / "tool-cache")
            # On a runner the job's /tmp is the host's, so the Docker daemon sees what the job puts there (the
            # suite's mount-point skeletons); here TMPDIR is a host directory at the same path instead.
            self.tmpdir = str(work / "tmp")
            for d in (self.home, self.workspace, self.temp, self.tool_cache, self.tmpdir):
                Path(d).mkdir(parents=True, exist_ok=True)
                mounts.append((d, d, False))
        else:
            self.home, self.workspace = "/github/home", f"/__w/{REPO_NAME}/{REPO_NAME}"
            self.temp, self.tool_cache = "/__w/_temp", "/__t"
        if Path("/var/run/docker.sock").exists():
            mounts.append(("/var/run/docker.sock", "/var/run/docker.sock", False))
        if self.replay.opts.mirror is not None:
            mounts.append((str(self.replay.opts.mirror), MIRROR_IN_CONTAINER, True))
        labels = {LABEL: self.replay.run_id, f"{LABEL}.job": self.name}
        try:
            with Container(image, labels=labels, mounts=mounts, options=options) as c:
                self.container = c
                c.exec(["sh", "-c", PREPARE, "sh", self.workspace, self.temp, self.home, self.tool_cache])
                self.record(
                    "(replay) set up job",
                    0,
                    time.monotonic() - start,
                    f"{image}{' on the host paths' if on_host else ''}",
                )
                try:
                    self.steps(start, timeout_s)
                    self.post_steps()
                finally:
                    if on_host and not self.replay.opts.keep_work:
                        # Files the job made as root: removed from inside, where it has the rights to.
                        c.exec(
                            ["sh", "-c", 'rm -rf "$1"/* "$1"/.[!.]* 2>/dev/null; true', "sh", str(work)], check=False
                        )
        finally:
            self.container = None
            if on_host and not self.replay.opts.keep_work:
                shutil.rmtree(work, ignore_errors=True)
        if self.summary:
            path = self.log_path.with_suffix(".summary.md")
            path.write_text("\n".join(self.summary))
            self.log(f"   job summary: {path}")
        try:
            ctx = self.ctx(self.env_for({}))
            outputs = self.job.get("outputs") or {}
            self.result.outputs = {k: to_str(expand_value(v, ctx)) for k, v in outputs.items()}
        except ReplayError as exc:
            self.log(exc.render())
            self.result.status = "failure"
        self.log(f"== job {self.label}: {self.result.status} ({time.monotonic() - start:.1f} s)")
        return self.result

    def record(self, step: str, rc: int | None, seconds: float, note: str = "", counts: bool = True) -> None:
        self.result.steps.append(StepResult(self.label, step, rc, seconds, note, counts))

    def env_for(self, step_env: Mapping[str, Any]) -> dict[str, str]:
        """workflow env < job env < $GITHUB_ENV < step env; each level's expressions see the levels below."""
        env = self.base_env()
        for level in (self.replay.workflow.get("env") or {}, self.job.get("env") or {}):
            ctx = self.ctx(env)
            env.update({k: to_str(expand_value(v, ctx)) for k, v in level.items()})
        env.update(self.github_env)
        ctx = self.ctx(env)
        env.update({k: to_str(expand_value(v, ctx)) for k, v in step_env.items()})
        path = env.get("PATH", DEFAULT_PATH)
        env["PATH"] = ":".join([*reversed(self.paths), path])
        return env

    def steps(self, start: float, timeout_s: float) -> None:
        for index, step in enumerate(self.job.get("steps") or []):
            step_id = str(step.get("id", f"__{index}"))
            env = self.env_for(step.get("env") or {})
            ctx = self.ctx(env)
            name = self.step_name(step, ctx)
            if not evaluate_if(step.get("if"), ctx):
                self.log(f"-- [{self.label}] {name}: skipped")
                self.steps_ctx[step_id] = Strict(
                    f"steps.{step_id}", {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
                )
                self.record(name, None, 0.0, "skipped")
                continue
            remaining = timeout_s - (time.monotonic() - start)
            step_timeout = min(remaining, float(step.get("timeout-minutes", 1e9)) * 60)
            self.log(f"-> [{self.label}] {name}")
            t0 = time.monotonic()
            outputs: dict[str, str] = {}
            try:
                if "uses" in step:
                    rc = self.uses(step, ctx, env, outputs)
                else:
                    rc = self.run_step(step, ctx, env, outputs, step_timeout)
            except ReplayError as exc:
                self.log(exc.render())
                rc = 1
            seconds = time.monotonic() - t0
            continue_on_error = truthy(expand_value(step.get("continue-on-error", False), ctx))
            outcome = "success" if rc == 0 else "failure"
            self.steps_ctx[step_id] = Strict(
                f"steps.{step_id}",
                {"outputs": outputs, "outcome": outcome, "conclusion": "success" if continue_on_error else outcome},
            )
            self.log(f"<- [{self.label}] {name}: rc={rc} ({seconds:.1f} s)")
            self.record(
                name, rc, seconds, "continue-on-error" if rc and continue_on_error else "", not continue_on_error
            )
            if rc != 0 and not continue_on_error:
                self.result.status = "failure"

    def post_steps(self) -> None:
        for name, action in reversed(list(zip(self.post_names, self.post, strict=True))):
            if self.result.status != "success":
                self.log(f"-- [{self.label}] {name}: skipped (the job did not succeed)")
                self.record(name, None, 0.0, "skipped")
                continue
            t0 = time.monotonic()
            self.log(f"-> [{self.label}] {name}")
            try:
                rc = action()
            except ReplayError as exc:
                self.log(exc.render())
                rc = 1
            self.log(f"<- [{self.label}] {name}: rc={rc} ({time.monotonic() - t0:.1f} s)")
            self.record(name, rc, time.monotonic() - t0)
            if rc:
                self.result.status = "failure"

    @staticmethod
    def step_name(step: Mapping[str, Any], ctx: Context) -> str:
        if "name" in step:
            return expand(str(step["name"]), ctx)
        if "uses" in step:
            return f"Run {step['uses']}"
        first = str(step.get("run", "")).strip().splitlines()
        return f"Run {first[0] if first else ''}"

    def shell(self, step: Mapping[str, Any]) -> tuple[str, str | None]:
        """(command template with {0}, working directory) from the step, the job's and the workflow's defaults."""
        shell, workdir = None, None
        for defaults in (self.replay.workflow.get("defaults"), self.job.get("defaults")):
            run = (defaults or {}).get("run") or {}
            shell = run.get("shell", shell)
            workdir = run.get("working-directory", workdir)
        shell = step.get("shell", shell)
        workdir = step.get("working-directory", workdir)
        templates = {
            None: "bash -e {0}",
            "bash": "bash --noprofile --norc -eo pipefail {0}",
            "sh": "sh -e {0}",
            "python": "python {0}",
        }
        template = templates.get(shell, str(shell))
        if "{0}" not in template:
            raise ReplayError(
                f"shell: {shell!r} is not one the replay knows (bash, sh, python, or a template with {{0}})"
            )
        return template, workdir

    # -- run: ------------------------------------------------------------------------------------------

    def file_commands(self) -> tuple[str, dict[str, str]]:
        directory = f"{self.temp}/_runner_file_commands/{uuid.uuid4().hex[:12]}"
        files = {
            name: f"{directory}/{name}"
            for name in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY")
        }
        assert self.container is not None
        self.container.exec(
            [
                "sh",
                "-c",
                'mkdir -p "$1" && cd "$1" && touch GITHUB_ENV GITHUB_PATH GITHUB_OUTPUT GITHUB_STEP_SUMMARY',
                "sh",
                directory,
            ]
        )
        return directory, files

    def read_file_commands(self, files: Mapping[str, str], outputs: dict[str, str]) -> None:
        assert self.container is not None
        self.github_env.update(parse_env_file(self.container.read(files["GITHUB_ENV"]), "GITHUB_ENV"))
        self.paths.extend(parse_path_file(self.container.read(files["GITHUB_PATH"])))
        outputs.update(parse_env_file(self.container.read(files["GITHUB_OUTPUT"]), "GITHUB_OUTPUT"))
        summary = self.container.read(files["GITHUB_STEP_SUMMARY"])
        if summary.strip():
            self.summary.append(summary)

    def run_step(
        self, step: Mapping[str, Any], ctx: Context, env: dict[str, str], outputs: dict[str, str], timeout_s: float
    ) -> int:
        assert self.container is not None
        script = expand(str(step["run"]), ctx)
        template, workdir = self.shell(step)
        directory, files = self.file_commands()
        path = f"{directory}/step.sh"
        self.container.write(path, script.encode())
        argv = [part.replace("{0}", path) for part in shlex.split(template)]
        if timeout_s < 1e8:
            argv = ["timeout", "--kill-after=10", str(max(1, int(timeout_s))), *argv]
        cwd = self.workspace
        if workdir:
            cwd = str(PurePosixPath(self.workspace) / expand(str(workdir), ctx))
        rc = self.container.stream(argv, env={**env, **files}, workdir=cwd, log=self.log)
        if rc == 124 and timeout_s < 1e8:
            self.log(f"   (timed out after {timeout_s:.0f} s)")
        self.read_file_commands(files, outputs)
        return rc

    # -- uses: -----------------------------------------------------------------------------------------

    def path_in_job(self, path: str, env: Mapping[str, str]) -> str:
        path = path.strip()
        if path == "~" or path.startswith("~/"):
            return env.get("HOME", self.home) + path[1:]
        return path if path.startswith("/") else str(PurePosixPath(self.workspace) / path)

    def uses(self, step: Mapping[str, Any], ctx: Context, env: dict[str, str], outputs: dict[str, str]) -> int:
        uses = str(step["uses"])
        inputs = {k: to_str(expand_value(v, ctx)) for k, v in (step.get("with") or {}).items()}
        kind = local_action(uses, inputs)
        handler: dict[str, Callable[[Mapping[str, str], dict[str, str], dict[str, str]], int]] = {
            "checkout": self.checkout,
            "setup-python": self.setup_python,
            "cache": self.cache,
            "cache-restore": self.cache,
            "cache-save": self.cache_save,
            "upload-artifact": self.upload_artifact,
            "download-artifact": self.download_artifact,
        }
        inputs["__kind"] = kind
        inputs["__name"] = self.step_name(step, ctx)
        return handler[kind](inputs, env, outputs)

    def checkout(self, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
        assert self.container is not None
        tree = self.replay.checkout_tree()
        what = "working tree" if self.replay.opts.worktree else f"HEAD {self.replay.sha[:12]}"
        self.log(f"   checkout: {self.replay.opts.repo} ({what}) -> {self.workspace}")
        self.container.put_tree(tree, self.workspace)
        return 0

    def setup_python(self, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
        assert self.container is not None
        want = inputs.get("python-version", "")
        res = self.container.exec(
            ["python3", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], check=False
        )
        if res.returncode != 0:
            self.log("   setup-python: no python3 in the container")
            return 1
        have = res.stdout.decode().strip()
        if want and not (have == want or have.startswith(want + ".")):
            self.log(f"   ::warning::setup-python asked for {want}; the replay uses the container's python3 {have}")
        venv = f"{self.tool_cache}/Python/{have}/x64"
        made = self.container.exec(["python3", "-m", "venv", venv], check=False)
        if made.returncode != 0:
            self.log(made.stdout.decode(errors="replace") + made.stderr.decode(errors="replace"))
            return 1
        self.log(f"   setup-python: python3 {have} in a venv at {venv}, on PATH")
        self.paths.append(f"{venv}/bin")
        self.github_env["pythonLocation"] = venv
        outputs.update({"python-version": have, "python-path": f"{venv}/bin/python"})
        return 0

    def cache_paths(self, inputs: Mapping[str, str], env: Mapping[str, str]) -> tuple[list[str], list[str]]:
        """(paths as written, absolute paths in the container)."""
        written = [p.strip() for p in inputs.get("path", "").splitlines() if p.strip()]
        if not written:
            raise ReplayError(f"{inputs['__name']}: no path")
        if any(any(c in p for c in "*?[!") for p in written):
            raise ReplayError(f"{inputs['__name']}: the replay's cache takes plain paths, not patterns: {written}")
        return written, [self.path_in_job(p, env) for p in written]

    def cache(self, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
        assert self.container is not None
        written, paths = self.cache_paths(inputs, env)
        key = inputs.get("key", "")
        if not key:
            raise ReplayError(f"{inputs['__name']}: no key")
        restore = [k.strip() for k in inputs.get("restore-keys", "").splitlines() if k.strip()]
        store = self.replay.opts.state_dir / "cache"
        found = find_cache(store, key, restore, written)
        exact = found is not None and found[0] == key
        outputs.update({"cache-hit": "true" if exact else "false", "cache-primary-key": key})
        outputs["cache-matched-key"] = found[0] if found else ""
        if found is None:
            self.log(f"   cache: no entry for {key} (restore keys: {restore or '-'}) in {store}")
            if inputs.get("fail-on-cache-miss", "false") == "true":
                return 1
        else:
            self.log(f"   cache: restoring {found[0]} ({'exact' if exact else 'prefix'} match) from {found[1]}")
            with open(found[1] / "cache.tar", "rb") as f:
                res = subprocess.run(["docker", "exec", "-i", self.container.id, "tar", "-C", "/", "-xf", "-"], stdin=f)
            if res.returncode != 0:
                return res.returncode
        if inputs["__kind"] == "cache" and not exact:
            self.post_names.append(f"Post {inputs['__name']}")
            self.post.append(lambda: self.save_cache(key, written, paths))
        return 0

    def cache_save(self, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
        written, paths = self.cache_paths(inputs, env)
        if not inputs.get("key"):
            raise ReplayError(f"{inputs['__name']}: no key")
        return self.save_cache(inputs["key"], written, paths)

    def save_cache(self, key: str, written: list[str], paths: list[str]) -> int:
        assert self.container is not None
        dest = self.replay.opts.state_dir / "cache" / cache_dir_name(key)
        if (dest / "meta.json").is_file():
            self.log(f"   cache: {key} exists already; not saved (as on GitHub)")
            return 0
        exist = self.container.exec(
            ["sh", "-c", 'for p; do [ -e "$p" ] && printf "%s\\0" "${p#/}"; done; true', "sh", *paths]
        ).stdout
        if not exist:
            self.log(f"   ::warning::cache {key}: none of {written} exists; nothing saved")
            return 0
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        rc = self.container.get_tar(["tar", "-C", "/", "--null", "-T", "-", "-cf", "-"], tmp / "cache.tar", stdin=exist)
        if rc != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            return rc
        (tmp / "meta.json").write_text(json.dumps({"key": key, "paths": written, "created": time.time()}))
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        size = (dest / "cache.tar").stat().st_size
        self.log(f"   cache: saved {key} ({size / 2**20:.1f} MiB) to {dest}")
        return 0

    def upload_artifact(self, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
        assert self.container is not None
        name = inputs.get("name") or "artifact"
        patterns = []
        for line in inputs.get("path", "").splitlines():
            line = line.strip()
            if line:
                neg = line.startswith("!")
                patterns.append(("!" if neg else "") + self.path_in_job(line[1:] if neg else line, env))
        roots = sorted({search_root(p) for p in patterns if not p.startswith("!")})
        listing = self.container.exec(
            ["sh", "-c", 'for r; do if [ -e "$r" ]; then find -L "$r" -type f -print0; fi; done; true', "sh", *roots]
        ).stdout.decode(errors="replace")
        plan = plan_upload(
            patterns, [p for p in listing.split("\0") if p], include_hidden=inputs.get("include-hidden-files") == "true"
        )
        if not plan.files:
            mode = inputs.get("if-no-files-found", "warn")
            message = f"no files found for artifact {name} with path {[p for p in patterns]}"
            if mode == "error":
                self.log(f"   ::error::{message}")
                return 1
            if mode == "warn":
                self.log(f"   ::warning::{message}")
            return 0
        if name in self.replay.uploaded and inputs.get("overwrite", "false") != "true":
            self.log(f"   ::error::an artifact named {name} was uploaded already in this run")
            return 1
        dest = self.replay.opts.state_dir / "artifacts" / name
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            tar = Path(tmp) / "a.tar"
            listed = b"".join(f.lstrip("/").encode() + b"\0" for f in plan.files)
            rc = self.container.get_tar(["tar", "-h", "-C", "/", "--null", "-T", "-", "-cf", "-"], tar, stdin=listed)
            if rc != 0:
                return rc
            root = plan.root.lstrip("/") or "."
            size = 0
            with tarfile.open(tar) as t:
                for member in t:
                    if not member.isfile():
                        continue
                    rel = os.path.relpath(member.name, root)
                    if rel.startswith(".."):
                        raise ReplayError(f"artifact {name}: {member.name} is outside its root {plan.root}")
                    out = dest / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    src = t.extractfile(member)
                    assert src is not None
                    with open(out, "wb") as f:
                        shutil.copyfileobj(src, f)
                    out.chmod(0o644)  # artifacts keep no file modes
                    size += member.size
        self.replay.uploaded.add(name)
        self.log(f"   artifact {name}: {len(plan.files)} file(s), {size / 2**20:.1f} MiB from {plan.root} -> {dest}")
        outputs["artifact-id"] = name
        return 0

    def download_artifact(self, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
        assert self.container is not None
        name = inputs.get("name", "")
        if not name:
            raise ReplayError(f"{inputs['__name']}: the replay downloads one artifact by name")
        src = self.replay.opts.state_dir / "artifacts" / name
        if name not in self.replay.uploaded or not src.is_dir():
            self.log(f"   ::error::no artifact {name} was uploaded in this run")
            return 1
        dest = self.path_in_job(inputs.get("path") or ".", env)
        self.container.put_tree(src, dest)
        self.log(f"   artifact {name}: {src} -> {dest}")
        outputs["download-path"] = dest
        return 0


# --------------------------------------------------------------------------------------------------- report


def table(results: Sequence[JobResult]) -> list[str]:
    rows = [("job", "step", "rc", "seconds")]
    for job in results:
        for s in job.steps:
            rc = "skip" if s.rc is None else str(s.rc) + ("*" if s.rc and not s.counts else "")
            rows.append((job.job, s.step[:70], rc, f"{s.seconds:.1f}"))
        rows.append((job.job, f"= job {job.status}", "", f"{sum(s.seconds for s in job.steps):.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]


def failed(results: Sequence[JobResult], targets: Sequence[str]) -> list[str]:
    """Why the replay fails: steps that failed, and target jobs that did not run."""
    problems = [f"{s.job}: {s.step} (rc {s.rc})" for j in results for s in j.steps if s.rc and s.counts]
    for target in targets:
        mine = [j for j in results if j.job == target or j.job.startswith(target + " (")]
        if mine and all(j.status == "skipped" for j in mine):
            problems.append(f"{target}: skipped by its if: (see --event)")
    return problems


# ------------------------------------------------------------------------------------------------------ CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["replay"], help="replay: run jobs of the workflow locally, in containers")
    p.add_argument(
        "--job", dest="replay_jobs", action="append", default=[], help="job id (repeatable); its needs run first"
    )
    p.add_argument("--matrix", default="", help="key=value[,key=value...]: the matrix combination(s) to run")
    p.add_argument("--list", dest="list_jobs", action="store_true", help="list the workflow's jobs and stop")
    p.add_argument("--worktree", action="store_true", help="check out the working tree instead of HEAD")
    p.add_argument("--event", default="push", help="github.event_name (default push; schedule runs `newest`)")
    p.add_argument("--mirror", type=Path, help="a local MNN git repository (bare ok): MNN_GIT_URL in the jobs")
    p.add_argument("--env", dest="replay_env", action="append", default=[], help="NAME=VALUE for every step")
    p.add_argument(
        "--state-dir", dest="state_dir", type=Path, help="caches, artifacts, logs (~/.cache/mnnrepro/replay)"
    )
    p.add_argument("--workflow", type=Path, default=WORKFLOW, help=f"relative to the checkout (default {WORKFLOW})")
    p.add_argument("--keep-work", dest="keep_work", action="store_true", help="keep runs-on jobs' host directories")


def main(args: argparse.Namespace) -> int:
    env = {}
    for item in args.replay_env:
        name, sep, value = item.partition("=")
        if not sep:
            raise ReplayError(f"--env wants NAME=VALUE, got {item!r}")
        env[name] = value
    mirror = args.mirror.resolve() if args.mirror else None
    if mirror is not None and not mirror.is_dir():
        raise ReplayError(f"--mirror {mirror} is not a directory")
    opts = Options(
        workflow=args.workflow,
        worktree=args.worktree,
        event=args.event,
        state_dir=(args.state_dir or default_state_dir()).expanduser().resolve(),
        mirror=mirror,
        env=env,
        keep_work=args.keep_work,
    )
    replay = Replay(opts)
    if args.list_jobs:
        print("\n".join(replay.describe()))
        return 0
    if not args.replay_jobs:
        raise ReplayError("which job? --job NAME (or --list)")
    events = replay.workflow.get("on") or {}
    if opts.event not in (events if isinstance(events, (dict, list)) else [events]):
        raise ReplayError(f"the workflow does not run on {opts.event!r}", hint=f"its events: {', '.join(events)}")
    print(
        f"replay of {opts.workflow} ({'working tree' if opts.worktree else 'HEAD ' + replay.sha[:12]}), event "
        f"{opts.event}, run {replay.run_id}; logs in {replay.run_dir}"
    )
    t0 = time.monotonic()
    results = replay.run(args.replay_jobs, parse_matrix_arg(args.matrix))
    print("\n".join(["", *table(results), f"wall time {time.monotonic() - t0:.1f} s"]))
    problems = failed(results, args.replay_jobs)
    for p in problems:
        print(f"FAILED: {p}")
    return 1 if problems else 0
