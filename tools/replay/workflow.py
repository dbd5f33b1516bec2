"""The workflow as data: jobs, matrices, file commands ($GITHUB_ENV, $GITHUB_OUTPUT, $GITHUB_PATH), the `uses:`
each local action stands in for, upload-artifact's choice of files and actions/cache's lookup."""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

from .errors import ReplayError
from .expressions import Context, equal, expand_value, to_str

WORKFLOW = Path(".github/workflows/mnnrepro.yml")


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
    combos = [c for c in combos if not any(all(equal(c.get(k), v) for k, v in ex.items()) for ex in exclude)]
    originals = set(keys)
    for entry in include:
        matched = False
        for combo in combos:
            if all(equal(combo[k], v) for k, v in entry.items() if k in originals):
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
    "actions/download-artifact": ("download-artifact", frozenset({"name", "path", "pattern", "merge-multiple"})),
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


def glob_regex(pattern: str) -> re.Pattern[str]:
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
    excludes = [glob_regex(p[1:]) for p in patterns if p.startswith("!")]
    roots = [search_root(p) for p in includes]
    regexes = [glob_regex(p) for p in includes]

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


def dispatch_inputs(on: Any, event: str, given: Mapping[str, str]) -> dict[str, Any]:
    """The `inputs` context: the workflow_dispatch inputs the workflow declares, each its --input value or its
    default on a workflow_dispatch run. On any other event GitHub gives no inputs (a declared one reads null,
    which compares equal to ''): here "". An input the workflow does not declare, --input on another event, a
    required input without a value, a choice not among its options or a boolean that is not true/false: errors."""
    dispatch = on.get("workflow_dispatch") if isinstance(on, dict) else None
    declared: dict[str, Any] = dict((dispatch or {}).get("inputs") or {})
    if unknown := sorted(set(given) - set(declared)):
        raise ReplayError(
            f"--input {', '.join(unknown)}: no such workflow_dispatch input",
            hint=f"the workflow's inputs: {', '.join(declared) or 'none'}",
        )
    if event != "workflow_dispatch":
        if given:
            raise ReplayError(f"--input is for --event workflow_dispatch, not {event}")
        return {name: "" for name in declared}
    out: dict[str, Any] = {}
    for name, spec in declared.items():
        spec = spec or {}
        kind = str(spec.get("type", "string"))
        value = given[name] if name in given else to_str(spec.get("default", ""))
        if spec.get("required") and value == "":
            raise ReplayError(f"workflow_dispatch input {name} is required: --input {name}=VALUE")
        if kind == "choice" and value not in [to_str(o) for o in spec.get("options") or []]:
            raise ReplayError(f"--input {name}={value}: not one of its options {spec.get('options')}")
        if kind == "boolean":
            if value.lower() not in ("true", "false"):
                raise ReplayError(f"--input {name}={value}: a boolean input wants true or false")
            out[name] = value.lower() == "true"
        elif kind == "number" and value != "":
            try:
                out[name] = float(value) if "." in value else int(value)
            except ValueError:
                raise ReplayError(f"--input {name}={value}: a number input wants a number") from None
        else:
            out[name] = value
    return out


def parse_inputs_arg(items: Sequence[str]) -> dict[str, str]:
    """--input key=value (repeatable): a value may hold commas and `=`; an empty value is allowed."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ReplayError(f"--input wants key=value, got {item!r}")
        out[key.strip()] = value
    return out


def artifacts_to_download(
    uploaded: Iterable[str], name: str, pattern: str, merge_multiple: bool
) -> list[tuple[str, str]]:
    """download-artifact's choice: (artifact, subdirectory of `path` it goes to). By name: that artifact, into
    `path` itself (absent: none, the caller's error). Else every artifact of the run, or those `pattern` matches
    (a glob), each into a directory of its name, unless merge-multiple is on or only one matched: then into
    `path` itself (the action's `isSingleArtifactDownload || mergeMultiple || artifacts.length === 1`)."""
    names = sorted(set(uploaded))
    if name:
        return [(name, "")] if name in names else []
    chosen = [n for n in names if not pattern or fnmatch.fnmatchcase(n, pattern)]
    flat = merge_multiple or len(chosen) == 1
    return [(n, "" if flat else n) for n in chosen]
