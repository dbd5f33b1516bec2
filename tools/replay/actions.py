"""The `uses:` steps: the local stand-ins for actions/checkout, setup-python, cache (and /restore, /save),
upload-artifact and download-artifact, each a function of the job it runs in (JobRun.uses picks one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .errors import ReplayError
from .workflow import artifacts_to_download, cache_dir_name, find_cache, plan_upload, search_root

if TYPE_CHECKING:
    from .job import JobRun


def path_in_job(job: JobRun, path: str, env: Mapping[str, str]) -> str:
    path = path.strip()
    if path == "~" or path.startswith("~/"):
        return env.get("HOME", job.home) + path[1:]
    return path if path.startswith("/") else str(PurePosixPath(job.workspace) / path)


def checkout(job: JobRun, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
    assert job.container is not None
    tree = job.replay.checkout_tree()
    what = "working tree" if job.replay.opts.worktree else f"HEAD {job.replay.sha[:12]}"
    job.log(f"   checkout: {job.replay.opts.repo} ({what}) -> {job.workspace}")
    job.container.put_tree(tree, job.workspace)
    return 0


def setup_python(job: JobRun, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
    assert job.container is not None
    want = inputs.get("python-version", "")
    res = job.container.exec(["python3", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], check=False)
    if res.returncode != 0:
        job.log("   setup-python: no python3 in the container")
        return 1
    have = res.stdout.decode().strip()
    if want and not (have == want or have.startswith(want + ".")):
        job.log(f"   ::warning::setup-python asked for {want}; the replay uses the container's python3 {have}")
    venv = f"{job.tool_cache}/Python/{have}/x64"
    made = job.container.exec(["python3", "-m", "venv", venv], check=False)
    if made.returncode != 0:
        job.log(made.stdout.decode(errors="replace") + made.stderr.decode(errors="replace"))
        return 1
    job.log(f"   setup-python: python3 {have} in a venv at {venv}, on PATH")
    job.paths.append(f"{venv}/bin")
    job.github_env["pythonLocation"] = venv
    outputs.update({"python-version": have, "python-path": f"{venv}/bin/python"})
    return 0


def cache_paths(job: JobRun, inputs: Mapping[str, str], env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(paths as written, absolute paths in the container)."""
    written = [p.strip() for p in inputs.get("path", "").splitlines() if p.strip()]
    if not written:
        raise ReplayError(f"{inputs['__name']}: no path")
    if any(any(c in p for c in "*?[!") for p in written):
        raise ReplayError(f"{inputs['__name']}: the replay's cache takes plain paths, not patterns: {written}")
    return written, [path_in_job(job, p, env) for p in written]


def cache(job: JobRun, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
    assert job.container is not None
    written, paths = cache_paths(job, inputs, env)
    key = inputs.get("key", "")
    if not key:
        raise ReplayError(f"{inputs['__name']}: no key")
    restore = [k.strip() for k in inputs.get("restore-keys", "").splitlines() if k.strip()]
    store = job.replay.opts.state_dir / "cache"
    found = find_cache(store, key, restore, written)
    exact = found is not None and found[0] == key
    outputs.update({"cache-hit": "true" if exact else "false", "cache-primary-key": key})
    outputs["cache-matched-key"] = found[0] if found else ""
    if found is None:
        job.log(f"   cache: no entry for {key} (restore keys: {restore or '-'}) in {store}")
        if inputs.get("fail-on-cache-miss", "false") == "true":
            return 1
    else:
        job.log(f"   cache: restoring {found[0]} ({'exact' if exact else 'prefix'} match) from {found[1]}")
        with open(found[1] / "cache.tar", "rb") as f:
            res = subprocess.run(["docker", "exec", "-i", job.container.id, "tar", "-C", "/", "-xf", "-"], stdin=f)
        if res.returncode != 0:
            return res.returncode
    if inputs["__kind"] == "cache" and not exact:
        job.post_names.append(f"Post {inputs['__name']}")
        job.post.append(lambda: save_cache(job, key, written, paths))
    return 0


def cache_save(job: JobRun, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
    written, paths = cache_paths(job, inputs, env)
    if not inputs.get("key"):
        raise ReplayError(f"{inputs['__name']}: no key")
    return save_cache(job, inputs["key"], written, paths)


def save_cache(job: JobRun, key: str, written: list[str], paths: list[str]) -> int:
    assert job.container is not None
    dest = job.replay.opts.state_dir / "cache" / cache_dir_name(key)
    if (dest / "meta.json").is_file():
        job.log(f"   cache: {key} exists already; not saved (as on GitHub)")
        return 0
    exist = job.container.exec(
        ["sh", "-c", 'for p; do [ -e "$p" ] && printf "%s\\0" "${p#/}"; done; true', "sh", *paths]
    ).stdout
    if not exist:
        job.log(f"   ::warning::cache {key}: none of {written} exists; nothing saved")
        return 0
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rc = job.container.get_tar(["tar", "-C", "/", "--null", "-T", "-", "-cf", "-"], tmp / "cache.tar", stdin=exist)
    if rc != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return rc
    (tmp / "meta.json").write_text(json.dumps({"key": key, "paths": written, "created": time.time()}))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    size = (dest / "cache.tar").stat().st_size
    job.log(f"   cache: saved {key} ({size / 2**20:.1f} MiB) to {dest}")
    return 0


def upload_artifact(job: JobRun, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
    assert job.container is not None
    name = inputs.get("name") or "artifact"
    patterns = []
    for line in inputs.get("path", "").splitlines():
        line = line.strip()
        if line:
            neg = line.startswith("!")
            patterns.append(("!" if neg else "") + path_in_job(job, line[1:] if neg else line, env))
    roots = sorted({search_root(p) for p in patterns if not p.startswith("!")})
    listing = job.container.exec(
        ["sh", "-c", 'for r; do if [ -e "$r" ]; then find -L "$r" -type f -print0; fi; done; true', "sh", *roots]
    ).stdout.decode(errors="replace")
    plan = plan_upload(
        patterns, [p for p in listing.split("\0") if p], include_hidden=inputs.get("include-hidden-files") == "true"
    )
    if not plan.files:
        mode = inputs.get("if-no-files-found", "warn")
        message = f"no files found for artifact {name} with path {[p for p in patterns]}"
        if mode == "error":
            job.log(f"   ::error::{message}")
            return 1
        if mode == "warn":
            job.log(f"   ::warning::{message}")
        return 0
    if name in job.replay.uploaded and inputs.get("overwrite", "false") != "true":
        job.log(f"   ::error::an artifact named {name} was uploaded already in this run")
        return 1
    dest = job.replay.opts.state_dir / "artifacts" / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tar = Path(tmp) / "a.tar"
        listed = b"".join(f.lstrip("/").encode() + b"\0" for f in plan.files)
        rc = job.container.get_tar(["tar", "-h", "-C", "/", "--null", "-T", "-", "-cf", "-"], tar, stdin=listed)
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
    job.replay.uploaded.add(name)
    job.log(f"   artifact {name}: {len(plan.files)} file(s), {size / 2**20:.1f} MiB from {plan.root} -> {dest}")
    outputs["artifact-id"] = name
    return 0


def download_artifact(job: JobRun, inputs: Mapping[str, str], env: dict[str, str], outputs: dict[str, str]) -> int:
    assert job.container is not None
    name, merge_multiple = inputs.get("name", ""), inputs.get("merge-multiple", "false") == "true"
    picked = artifacts_to_download(job.replay.uploaded, name, inputs.get("pattern", ""), merge_multiple)
    if name and not picked:
        job.log(f"   ::error::no artifact {name} was uploaded in this run")
        return 1
    dest = path_in_job(job, inputs.get("path") or ".", env)
    job.log(
        f"   {len(picked)} artifact(s) to {dest}" + (f" (pattern {inputs['pattern']})" if inputs.get("pattern") else "")
    )
    for artifact, subdir in picked:
        src = job.replay.opts.state_dir / "artifacts" / artifact
        if not src.is_dir():
            job.log(f"   ::error::artifact {artifact} is gone from {src}")
            return 1
        where = str(PurePosixPath(dest) / subdir) if subdir else dest
        job.container.put_tree(src, where)
        job.log(f"   artifact {artifact}: {src} -> {where}")
    outputs["download-path"] = dest
    return 0
