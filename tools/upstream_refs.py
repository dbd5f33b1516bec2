"""Upstream MNN's refs for the scheduled jobs of .github/workflows/mnnrepro.yml (`newest`, `nightly-head`), found
once here so that the two jobs cannot disagree on what "the newest release" is.

    python tools/upstream_refs.py URL     (URL: a git remote or a local repository, e.g. $MNN_GIT_URL's mirror)

prints GITHUB_OUTPUT lines: `tag=` the highest X.Y.Z release tag by version, not by text (3.10.0 > 3.9.0; other
shapes such as 0.2.0.1 or Android-0.8.1.2 are not releases), `tag_commit=` the commit it names (an annotated
tag's peeled `^{}` line), `head=` the commit of the default branch's HEAD. Exits 1 with a message when the
remote has no release tag or no HEAD.
"""

from __future__ import annotations

import os
import subprocess
import sys

from mnnrepro.fixtures import parse_version

TIMEOUT_S = 300.0  # a network call to GitHub


def releases(ls_remote_tags: str) -> dict[str, str]:
    """`git ls-remote --tags` output -> {X.Y.Z tag: the commit it names}."""
    direct: dict[str, str] = {}
    peeled: dict[str, str] = {}
    for line in ls_remote_tags.splitlines():
        sha, _, ref = line.strip().partition("\t")
        name = ref.removeprefix("refs/tags/")
        if name == ref:
            continue
        into = peeled if name.endswith("^{}") else direct
        name = name.removesuffix("^{}")
        version = parse_version(name)
        if version is not None and name == ".".join(map(str, version)):  # no "v3.6.1", no "3.06.1"
            into[name] = sha
    return {name: peeled.get(name, sha) for name, sha in direct.items()}


def newest(tags: dict[str, str]) -> tuple[str, str] | None:
    """The highest release by version with its commit; None without one."""
    if not tags:
        return None
    name = max(tags, key=lambda t: parse_version(t) or (0, 0, 0))
    return name, tags[name]


def head_of(ls_remote_head: str) -> str | None:
    """`git ls-remote URL HEAD` output -> HEAD's commit."""
    for line in ls_remote_head.splitlines():
        sha, _, ref = line.strip().partition("\t")
        if ref == "HEAD":
            return sha
    return None


def ls_remote(*args: str) -> str:
    """`git ls-remote ARGS...`'s output; exits with git's message on failure. No credential prompt: a public remote
    or a local path."""
    res = subprocess.run(
        ["git", "-c", "credential.helper=", "ls-remote", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )
    if res.returncode != 0:
        sys.exit(f"git ls-remote {' '.join(args)}: exit {res.returncode}: {res.stderr.strip()[-400:]}")
    return res.stdout


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.exit(__doc__)
    url = argv[0]
    found = newest(releases(ls_remote("--tags", url)))
    if found is None:
        sys.exit(f"no X.Y.Z release tag in {url}")
    head = head_of(ls_remote(url, "HEAD"))
    if head is None:
        sys.exit(f"no HEAD in {url}")
    print(f"tag={found[0]}\ntag_commit={found[1]}\nhead={head}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
