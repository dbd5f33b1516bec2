"""An independent reference for the driver's training step: MNN's Lenet forward and backward, by hand, in
float64 numpy, and MNN's Caffe-style SGD update. It shares no code with MNN; it is what makes the CPU golden
trustworthy (issue 4). Each definition below names the MNN source it mirrors (paths inside the MNN tree, 3.3.0).

Model (native/src/models/lenet.cpp, same graph as tools/train/source/models/Lenet.cpp):
  conv 5x5 1->20 valid, maxpool 2x2/2, conv 5x5 20->50 valid, maxpool 2x2/2, flatten in NCHW order to
  [N, 800], linear 800->500 (weight [500, 800], bias [1, 500]), relu, dropout (x * mask, the mask replayed from
  the driver's dump), linear 500->10, softmax.
Loss (tools/train/source/optimizer/Loss.cpp): ``_CrossEntropy(p, t) = -mean_n(sum_k log(p[n,k]) * t[n,k])``,
  a mean over the batch.
Backward follows MNN's gradient rules where they are not the textbook ones:
  - max pool (source/geometry/GeometryPoolGrad.cpp): *every* input equal to its window's maximum
    (``x >= max``) receives the full output gradient, so a window of ties passes it to all its elements
    (MNIST's blank borders make such windows common);
  - relu (tools/train/source/grad/ReluGrad.cpp): mask ``relu(sign(x))``, i.e. ``x > 0``.
SGD (tools/train/source/optimizer/SGD.cpp, L2 regularization):
  ``g' = g + wd * p;  v = lr * g' + momentum * v;  p = p - v``   (Caffe form: lr inside the history)
Learning rate (tools/train/source/optimizer/LearningRateScheduler.cpp):
  ``LrScheduler::inv(base, step, gamma, power) = base * (1 + gamma * step) ** -power``.
Checks (issue 23: here, in the training room, not in gradcheck, which knows no model): ``check_dumps`` (a driver's
dumps against this reference), ``verify_golden`` (a Lenet golden) and ``sgd_config`` (a run's optimizer settings).
Other models (models/mnistv2.py) share its convolution, max pool, softmax, cross entropy, SGD and MNIST data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .... import fixtures
from ....gradcheck import (
    Dumps,
    GradReport,
    MissingDump,
    Problem,
    Tolerance,
    add_row,
    before_path,
    dump_defect,
    finish,
    load_dump,
    missing_golden,
    read_provenance,
    reference_tolerance,
)

F64 = NDArray[np.float64]
Params = dict[str, F64]

# Model order, as the driver names them (native/README.md).
PARAM_NAMES = (
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "ip1.weight",
    "ip1.bias",
    "ip2.weight",
    "ip2.bias",
)
PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (20, 1, 5, 5),
    "conv1.bias": (20,),
    "conv2.weight": (50, 20, 5, 5),
    "conv2.bias": (50,),
    "ip1.weight": (500, 800),
    "ip1.bias": (1, 500),
    "ip2.weight": (10, 500),
    "ip2.bias": (1, 10),
}
# What a run must share with its golden at every dumped step (gradcheck compares them exactly; native/README.md,
# "Dump files"): the training images, and the dropout mask the driver drew for the step.
STEP_INPUTS = (("batch_indices.npy", "training images"), ("dropout_mask.npy", "dropout mask"))
CLASSES = 10


@dataclass(frozen=True)
class SgdConfig:
    """The driver's optimizer (native/src/params.cpp, the `start` event's config)."""

    lr_base: float = 0.01
    lr_gamma: float = 1e-4
    lr_power: float = 0.75
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def lr(self, step: int) -> float:
        return lr_inv(self.lr_base, step, self.lr_gamma, self.lr_power)


def lr_inv(base: float, step: int, gamma: float, power: float) -> float:
    """LrScheduler::inv."""
    return float(base * (1.0 + gamma * step) ** (-power))


def sgd_update(
    param: F64, grad: F64, history: F64, *, lr: float, momentum: float, weight_decay: float
) -> tuple[F64, F64]:
    """One MNN SGD update; returns (new parameter, new history)."""
    velocity = lr * (grad + weight_decay * param) + momentum * history
    return param - velocity, velocity


# -- layers ------------------------------------------------------------------------------------------


def _windows(x: F64, k: int) -> F64:
    """[N, C, H, W] -> [N, Ho, Wo, C*k*k] patches of a valid, stride-1 convolution."""
    n, c, h, w = x.shape
    view = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # [N, C, Ho, Wo, k, k]
    return np.ascontiguousarray(view.transpose(0, 2, 3, 1, 4, 5)).reshape(n, h - k + 1, w - k + 1, c * k * k)


def conv_forward(x: F64, weight: F64, bias: F64) -> tuple[F64, F64]:
    """Valid, stride-1 cross-correlation (MNN's Convolution). Returns (y [N, O, Ho, Wo], patches)."""
    out, _, k, _ = weight.shape
    cols = _windows(x, k)
    y = cols @ weight.reshape(out, -1).T + bias.reshape(-1)  # [N, Ho, Wo, O]
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)), cols


def conv_backward(
    dy: F64, cols: F64, weight: F64, x_shape: tuple[int, ...], need_dx: bool
) -> tuple[F64 | None, F64, F64]:
    """Returns (dx or None, dweight, dbias)."""
    out, cin, k, _ = weight.shape
    dy_rows = dy.transpose(0, 2, 3, 1).reshape(-1, out)  # [N*Ho*Wo, O]
    dweight = (dy_rows.T @ cols.reshape(-1, cin * k * k)).reshape(weight.shape)
    dbias = dy_rows.sum(axis=0)
    if not need_dx:
        return None, dweight, dbias
    n, _, ho, wo = dy.shape
    dcols = (dy_rows @ weight.reshape(out, -1)).reshape(n, ho, wo, cin, k, k)
    dx = np.zeros(x_shape)
    for i in range(k):
        for j in range(k):
            dx[:, :, i : i + ho, j : j + wo] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dx, dweight, dbias


def maxpool_forward(x: F64) -> F64:
    """2x2 max pool, stride 2, valid (H and W even here)."""
    n, c, h, w = x.shape
    result: F64 = x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    return result


def maxpool_backward(dy: F64, x: F64, y: F64) -> F64:
    """MNN's rule: every element >= its window's max (all ties) gets the window's gradient."""
    n, c, h, w = x.shape
    xr = x.reshape(n, c, h // 2, 2, w // 2, 2)
    hit = xr >= y[:, :, :, None, :, None]
    dx: F64 = (hit * dy[:, :, :, None, :, None]).reshape(n, c, h, w)
    return dx


def softmax(z: F64) -> F64:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    result: F64 = e / e.sum(axis=1, keepdims=True)
    return result


def cross_entropy(probs: F64, onehot: F64) -> float:
    """_CrossEntropy (tools/train/source/optimizer/Loss.cpp): -mean over the batch of sum_k log(p) * t."""
    return float(-np.mean(np.sum(np.log(probs) * onehot, axis=1)))


def cross_entropy_softmax_grad(probs: F64, onehot: F64) -> F64:
    """d _CrossEntropy(softmax(z), t) / dz = (p - t) / N (MNN's chain of Log, Softmax and Reduce grads)."""
    result: F64 = (probs - onehot) / len(probs)
    return result


# -- the model ---------------------------------------------------------------------------------------


@dataclass
class Forward:
    """The forward pass's loss and everything backward needs."""

    loss: float
    probs: F64
    cache: dict[str, F64] = field(repr=False)


def forward(params: Mapping[str, F64], images: F64, onehot: F64, mask: F64) -> Forward:
    """images [N, 1, 28, 28] scaled to [0, 1]; onehot [N, 10]; mask [N, 500] (0 or 1/(1-p))."""
    c: dict[str, F64] = {"x": images, "onehot": onehot, "mask": mask}
    c["a1"], c["cols1"] = conv_forward(images, params["conv1.weight"], params["conv1.bias"])
    c["p1"] = maxpool_forward(c["a1"])
    c["a2"], c["cols2"] = conv_forward(c["p1"], params["conv2.weight"], params["conv2.bias"])
    c["p2"] = maxpool_forward(c["a2"])
    c["flat"] = c["p2"].reshape(len(images), -1)  # NCHW order: channel-major, as _Reshape + _Convert(NCHW)
    c["h"] = c["flat"] @ params["ip1.weight"].T + params["ip1.bias"]
    c["r"] = np.maximum(c["h"], 0.0)
    c["d"] = c["r"] * mask
    c["z"] = c["d"] @ params["ip2.weight"].T + params["ip2.bias"]
    probs = softmax(c["z"])
    c["probs"] = probs
    return Forward(cross_entropy(probs, onehot), probs, c)


def backward(params: Mapping[str, F64], fwd: Forward) -> Params:
    """Gradients of the loss with respect to every parameter, shaped like the parameters."""
    c = fwd.cache
    dz = cross_entropy_softmax_grad(c["probs"], c["onehot"])
    g: Params = {}
    g["ip2.weight"] = dz.T @ c["d"]
    g["ip2.bias"] = dz.sum(axis=0, keepdims=True)
    dd = dz @ params["ip2.weight"]
    dh = dd * c["mask"] * (c["h"] > 0)
    g["ip1.weight"] = dh.T @ c["flat"]
    g["ip1.bias"] = dh.sum(axis=0, keepdims=True)
    dp2 = (dh @ params["ip1.weight"]).reshape(c["p2"].shape)
    da2 = maxpool_backward(dp2, c["a2"], c["p2"])
    dp1, g["conv2.weight"], g["conv2.bias"] = conv_backward(
        da2, c["cols2"], params["conv2.weight"], c["p1"].shape, need_dx=True
    )
    assert dp1 is not None
    da1 = maxpool_backward(dp1, c["a1"], c["p1"])
    _, g["conv1.weight"], g["conv1.bias"] = conv_backward(
        da1, c["cols1"], params["conv1.weight"], c["x"].shape, need_dx=False
    )
    return {name: g[name].reshape(PARAM_SHAPES[name]) for name in PARAM_NAMES}


def batch_inputs(images_u8: NDArray[np.uint8], labels: NDArray[np.uint8], indices: Sequence[int]) -> tuple[F64, F64]:
    """The driver's preprocessing: uint8 -> float * 1/255, [N, 1, 28, 28]; labels -> one-hot [N, 10]."""
    idx = np.asarray(indices, dtype=np.int64)
    x = images_u8[idx].astype(np.float64).reshape(len(idx), 1, 28, 28) / 255.0
    onehot = np.eye(CLASSES)[labels[idx].astype(np.int64)]
    return x, onehot


# -- replaying the driver's first steps ---------------------------------------------------------------


@dataclass(frozen=True)
class StepInputs:
    """What the driver fed one step (grads/step<N>/batch_indices.npy and dropout_mask.npy)."""

    indices: tuple[int, ...]
    mask: F64


@dataclass
class StepResult:
    step: int
    loss: float
    lr: float
    grads: Params
    after: Params


def replay(
    init: Mapping[str, NDArray[np.floating]],
    images_u8: NDArray[np.uint8],
    labels: NDArray[np.uint8],
    steps: Sequence[StepInputs],
    sgd: SgdConfig = SgdConfig(),
) -> list[StepResult]:
    """Train from ``init`` for ``len(steps)`` steps (step numbers 0, 1, ...), independently of MNN."""
    params: Params = {
        name: np.asarray(init[name], dtype=np.float64).reshape(PARAM_SHAPES[name]) for name in PARAM_NAMES
    }
    history: Params = {name: np.zeros(PARAM_SHAPES[name]) for name in PARAM_NAMES}
    out: list[StepResult] = []
    for number, inputs in enumerate(steps):
        x, onehot = batch_inputs(images_u8, labels, inputs.indices)
        fwd = forward(params, x, onehot, np.asarray(inputs.mask, dtype=np.float64))
        grads = backward(params, fwd)
        lr = sgd.lr(number)
        for name in PARAM_NAMES:
            params[name], history[name] = sgd_update(
                params[name], grads[name], history[name], lr=lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay
            )
        out.append(StepResult(number, fwd.loss, lr, grads, {k: v.copy() for k, v in params.items()}))
    return out


# -- MNIST IDX files (fixtures/mnist) -------------------------------------------------------------------


def read_idx(path: Path) -> NDArray[np.uint8]:
    """An IDX file of unsigned bytes (magic 0x0000 08 <rank>), big-endian dimensions."""
    data = path.read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    rank = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} bytes of data for dimensions {dims}")
    return body.reshape(dims)


def load_train_split(mnist_dir: Path) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    images = read_idx(mnist_dir / "train-images-idx3-ubyte")
    labels = read_idx(mnist_dir / "train-labels-idx1-ubyte")
    return images.reshape(len(images), -1), labels


# -- checking a driver's dumps against this reference (moved from gradcheck, issue 23) -----------------------


def check_dumps(
    dumps: Dumps,
    steps: Sequence[int],
    *,
    data_dir: Path = fixtures.MNIST,
    sgd: SgdConfig | None = None,
    tolerance: Tolerance | None = None,
    artifacts: Path | None = None,
    losses: Sequence[float] = (),
    not_run: tuple[Sequence[int], int | None] = ((), None),
) -> GradReport:
    """MNN's dumps (obtained) vs this reference (golden), each step from MNN's own state.
    ``not_run``: the golden steps left out because the run never reached them, and its step count (said, n/a).

    Step N starts from MNN's parameters before it (the initial ones, then MNN's after of step N-1) and MNN's
    previous update as the momentum history, so one step's rounding cannot push the reference across a ReLU or
    max-pool boundary at the next: every row measures one step's gradient and update arithmetic. ``losses``
    (MNN's, per step) are checked too, to 1e-3 relative.
    """
    limit = tolerance or reference_tolerance()
    sgd = sgd or SgdConfig()
    report = GradReport(f"numpy float64 reference vs MNN dumps in {dumps.root}", artifacts=artifacts)
    report.not_run, report.run_steps = [int(s) for s in not_run[0]], not_run[1]
    images, labels = load_train_split(data_dir)
    for step in steps:
        try:
            indices = [int(i) for i in load_dump(dumps.step_file(step, "batch_indices.npy"))]
            mask = load_dump(dumps.step_file(step, "dropout_mask.npy"))
            before = {n: load_dump(before_path(dumps, step, n)) for n in PARAM_NAMES}
            history = {
                n: np.zeros(PARAM_SHAPES[n]) if step == 0 else load_dump(before_path(dumps, step - 1, n)) - before[n]
                for n in PARAM_NAMES
            }
        except MissingDump as exc:
            report.problems.append(Problem("missing file", f"no {exc}", step=step))
            continue
        bad = [n for n in PARAM_NAMES if dump_defect(before[n], PARAM_SHAPES[n])]
        if bad:
            report.problems.append(Problem("bad parameters", f"before the step: {', '.join(bad)}", step=step))
            continue
        x, onehot = batch_inputs(images, labels, indices)
        fwd = forward(before, x, onehot, mask)
        grads = backward(before, fwd)
        lr = sgd.lr(step)
        if step < len(losses) and not math.isclose(fwd.loss, losses[step], rel_tol=1e-3):
            report.problems.append(Problem("loss differs", f"MNN {losses[step]:.7f}, numpy {fwd.loss:.7f}", step=step))
        for name in PARAM_NAMES:
            update = -(lr * (grads[name] + sgd.weight_decay * before[name]) + sgd.momentum * history[name])
            for kind, expected in (("grad", grads[name]), ("after", update)):
                try:
                    o = load_dump(dumps.tensor(step, kind, name))
                except MissingDump as exc:
                    report.problems.append(Problem("missing file", f"no {exc}", name, step, kind))
                    continue
                if kind == "after" and o.shape == before[name].shape:
                    o = o - before[name]
                add_row(report, name, step, kind, o, expected, limit, artifacts)
    return finish(report) if artifacts else report


def verify_golden(
    golden_dir: Path, *, data_dir: Path = fixtures.MNIST, tolerance: Tolerance | None = None
) -> GradReport:
    """A Lenet golden against this reference (needs no MNN; workloads.train.workload.verify_golden picks the
    reference by the golden's model)."""
    provenance = read_provenance(golden_dir)
    if provenance is None:
        return missing_golden(golden_dir)
    return check_dumps(
        Dumps(golden_dir, golden_dir / "init"),
        [int(s) for s in provenance["steps"]],
        data_dir=data_dir,
        sgd=sgd_config(provenance.get("config", {})),
        tolerance=tolerance,
        losses=[float(x) for x in provenance.get("losses", [])],
    )


def sgd_config(config: dict[str, Any]) -> SgdConfig:
    """The optimizer settings a driver run reported (its `start` event's config)."""
    default = SgdConfig()
    return SgdConfig(
        float(config.get("lr_base", default.lr_base)),
        float(config.get("lr_gamma", default.lr_gamma)),
        float(config.get("lr_power", default.lr_power)),
        float(config.get("momentum", default.momentum)),
        float(config.get("weight_decay", default.weight_decay)),
    )
