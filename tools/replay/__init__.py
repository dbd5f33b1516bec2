"""Local replay of the GitHub Actions workflow: each job's `run:` steps as written, in a fresh Debian 12 container.

    python tools/ci_replay.py --list
    python tools/ci_replay.py --job checks
    python tools/ci_replay.py --job reproduce --matrix ref=3.3.0,session=vulkan_buffer,icd=lavapipe

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

A developer tool, not part of the library: it imports mnnrepro (errors, interrupts, the checkout), never the
reverse. Modules, lowest first: errors, expressions (`${{ }}`), workflow (the workflow as data), containers
(the docker CLI), model (options and results), actions (`uses:`), job (one job's steps), engine (the jobs in
order), cli.
"""
