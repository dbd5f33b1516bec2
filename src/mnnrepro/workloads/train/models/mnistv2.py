"""An independent reference for the `mnistv2` workload (issue 24): MNN's demo MnistV2 forward and backward, by
hand, in float64 numpy, and the same SGD step as Lenet's. It shares no code with MNN; it vouches for the
workload's CPU golden, where finite differences are too coarse (ReLU6 and max-pool kinks, max-pool ties on
MNIST's blank borders). Each definition names the MNN source whose semantics it mirrors (paths in the MNN tree,
3.3.0). Helpers MnistV2 shares with Lenet (convolution, max pool with MNN's tie rule, softmax, cross entropy,
SGD, learning rate, data) come from Lenet's reference (models/lenet.py).

Model (tools/train/source/demo/mnistTrain.cpp, class MnistV2):
  conv1 5x5 1->8 valid (NN::Conv: weight [8,1,5,5], bias [8]); BatchNorm(8) in training mode (NN::BatchNorm:
  scale and bias [1,8,1,1]); maxpool 2x2/2 (24 -> 12); depthwise ConvTranspose 5x5 8->8 (NN::ConvTranspose with
  depthwise: weight [8,1,5,5] not transposed, bias [8]; 12 -> 16); maxpool 2x2/2 (16 -> 8); _Reshape to
  [N,512,1,1] (NCHW: channel-major); ip1 1x1 conv 512->100 + ReLU6 (weight [100,512,1,1], bias [100]); ip2 1x1
  conv 100->10 (weight [10,100,1,1], bias [10]); _Convert to NCHW, softmax over the 10 classes.
Loss: _CrossEntropy (tools/train/source/optimizer/Loss.cpp), as Lenet's.
Backward follows MNN's gradient rules (tools/train/source/grad/), where they are not the textbook ones too:
  - BatchNorm has no gradient rule of its own in training: BatchNormModule::onForward builds it from
    _ReduceMean, Subtract, _Square, Add, _Sqrt, _Reciprocal, Multiply, Add, and OpGrad differentiates each op
    (the sample mean is not detached). The backward below walks the same chain; in exact arithmetic it equals
    the textbook BatchNorm gradient (tests check that), and it makes conv1's bias gradient exactly zero.
  - ReLU6 (grad/ReluGrad.cpp, Relu6Grad): mask ``min < x < max``, strict: 0 at x == 0 and at x == 6.
  - max pool (source/geometry/GeometryPoolGrad.cpp): every element >= its window's max gets the full gradient
    (lenet.maxpool_backward).
SGD and learning rate: lenet (tools/train/source/optimizer/SGD.cpp, LearningRateScheduler.cpp), over
every trainable parameter, BatchNorm's scale and bias included (ParameterOptimizer.cpp: TRAINABLE inputs only,
so not the running statistics, which are _Const).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .... import fixtures
from ....contract import read_events
from ....gradcheck import (
    Dumps,
    GradReport,
    MissingDump,
    Problem,
    Tolerance,
    UnreadableDump,
    add_row,
    before_path,
    dump_defect,
    dump_problem,
    load_dump,
    nonfinite,
    reference_tolerance,
)
from .lenet import (
    F64,
    Forward,
    Params,
    SgdConfig,
    StepResult,
    batch_inputs,
    conv_backward,
    conv_forward,
    cross_entropy,
    cross_entropy_softmax_grad,
    load_train_split,
    maxpool_backward,
    maxpool_forward,
    sgd_config,
    sgd_update,
    softmax,
)

# The driver's names, in model order (native/README.md, "MnistV2"): registerModel({conv1, bn, conv2, ip1, ip2}) in
# mnistTrain.cpp; within a layer weight then bias (BatchNorm: scale, then bias, as BatchNormModule adds them).
PARAM_NAMES = (
    "conv1.weight",
    "conv1.bias",
    "bn.scale",
    "bn.bias",
    "conv2.weight",
    "conv2.bias",
    "ip1.weight",
    "ip1.bias",
    "ip2.weight",
    "ip2.bias",
)
PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (8, 1, 5, 5),
    "conv1.bias": (8,),
    "bn.scale": (1, 8, 1, 1),  # BatchNormModule's statShape {1, channels, 1, 1}
    "bn.bias": (1, 8, 1, 1),
    "conv2.weight": (8, 1, 5, 5),  # _initParameters, depthwise: {channel[0], 1, kh, kw}
    "conv2.bias": (8,),
    "ip1.weight": (100, 512, 1, 1),
    "ip1.bias": (100,),
    "ip2.weight": (10, 100, 1, 1),
    "ip2.bias": (10,),
}
# What a run must share with its golden at every dumped step (gradcheck compares them exactly): the training images
# only, MnistV2 having no dropout. BatchNorm's running statistics are dumped too, but they are results (checked
# against this reference by check_dumps), not inputs.
STEP_INPUTS = (("batch_indices.npy", "training images"),)
# NN::BatchNorm's defaults (tools/train/source/nn/NN.hpp): m = 0.999, e = 1e-5, both float32 in MNN.
BN_EPS = float(np.float32(1e-5))
BN_MOMENTUM = float(np.float32(0.999))
BN_AXES = (0, 2, 3)  # BatchNormModule, dims == 4: mReductionDims {0, 2, 3}
RELU6_MIN, RELU6_MAX = 0.0, 6.0  # _Relu6's defaults (include/MNN/expr/NeuralNetWorkOp.hpp)
AVOID_ZERO = float(np.float32(1e-6))  # OpGrad::divideAvoidZero (grad/OpGrad.cpp)


# -- layers ------------------------------------------------------------------------------------------


def deconv_depthwise_forward(x: F64, weight: F64, bias: F64) -> F64:
    """_Deconv with group == channels, stride 1, VALID (DeconvolutionDepthwise): every input pixel adds
    ``x * w`` to the k x k window it starts, kernel not flipped (backend/cpu/CPUDeconvolutionDepthwise.cpp,
    compute/ConvOpt.cpp MNNDeconvRunForUnitDepthWise); output (H - 1) + k (shape/ShapeDeconvolution.cpp)."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    y = np.zeros((n, c, h + k - 1, w + k - 1))
    for i in range(k):
        for j in range(k):
            y[:, :, i : i + h, j : j + w] += x * weight[:, 0, i, j][None, :, None, None]
    result: F64 = y + bias.reshape(1, -1, 1, 1)
    return result


def deconv_depthwise_backward(dy: F64, x: F64, weight: F64) -> tuple[F64, F64, F64]:
    """DeconvGrad (grad/ConvGrad.cpp): dx = ConvolutionDepthwise(dy, w), a valid cross-correlation; dw =
    Conv2DBackPropFilter(dy, x) (geometry/GeometryConv2DBackPropFilter.cpp, depthwise); db = sum of dy over
    N, H, W. Returns (dx, dweight, dbias)."""
    k = weight.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(dy, (k, k), axis=(2, 3))  # [N, C, H, W, k, k]
    dx: F64 = np.einsum("ncijkl,ckl->ncij", windows, weight[:, 0])
    dweight: F64 = np.einsum("ncijkl,ncij->ckl", windows, x)[:, None]
    dbias: F64 = dy.sum(axis=(0, 2, 3))
    return dx, dweight, dbias


def batchnorm_train_forward(x: F64, scale: F64, bias: F64, eps: float = BN_EPS) -> tuple[F64, dict[str, F64]]:
    """BatchNormModule::onForward in training (tools/train/source/nn/NN.cpp): batch statistics over N, H, W;
    biased variance (a mean of squares); ``(x - mean) * 1/sqrt(var + eps) * scale + bias``. Returns the output
    and the chain's intermediates (mean and var are also what the running statistics take)."""
    mean = x.mean(axis=BN_AXES, keepdims=True)  # _ReduceMean(x, {0, 2, 3}, true)
    xs = x - mean
    var = np.square(xs).mean(axis=BN_AXES, keepdims=True)  # _ReduceMean(_Square(xSub), ...)
    s = np.sqrt(var + eps)
    r = 1.0 / s  # _Reciprocal(_Sqrt(sampleVar + _Const(mEps)))
    xn = xs * r
    y: F64 = xn * scale + bias
    return y, {"mean": mean, "var": var, "xs": xs, "s": s, "r": r, "xn": xn}


def batchnorm_train_backward(dy: F64, cache: Mapping[str, F64], scale: F64) -> tuple[F64, F64, F64]:
    """OpGrad through BatchNormModule's op chain, one op at a time, as MNN differentiates it (no BatchNorm grad
    rule is involved). Broadcast inputs get their gradient summed over the broadcast axes (grad/BinaryGrad.cpp).
    Returns (dx, dscale, dbias)."""

    def reduce(a: F64) -> F64:
        result: F64 = a.sum(axis=BN_AXES, keepdims=True)
        return result

    xs, s, r, xn = cache["xs"], cache["s"], cache["r"], cache["xn"]
    count = xs.size / s.size  # ReduceGrad, MEAN: dy * (output count / input count)
    dscale, dbias = reduce(dy * xn), reduce(dy)  # Multiply, Add
    dxn = dy * scale
    dr = reduce(dxn * xs)  # Multiply xSub * rSampleStd, the rSampleStd side
    ds = -np.power(s, -2.0) * dr  # UnaryGrad RECIPROCAL: -x^-2 * dy
    # UnaryGrad SQRT: divideAvoidZero(0.5 * dy, sqrt(x)) = 0.5 dy / max(|y|, 1e-6) * sign(y); y >= sqrt(eps) here.
    dvar = 0.5 * ds / np.maximum(np.abs(s), AVOID_ZERO) * np.sign(s)  # + eps passes it through (Add)
    dsquare = np.broadcast_to(dvar / count, xs.shape)  # ReduceMean's grad
    dxs = dxn * r + (xs * dsquare + xs * dsquare)  # Multiply's xSub side + UnaryGrad SQUARE: x*dy + x*dy
    dmean = -reduce(dxs)  # Subtract: the mean's side, summed over the broadcast axes
    dx: F64 = dxs + np.broadcast_to(dmean / count, xs.shape)  # + ReduceMean's grad of the sample mean
    return dx, dscale, dbias


def batchnorm_running_update(
    running_mean: F64, running_var: F64, mean: F64, var: F64, momentum: float = BN_MOMENTUM
) -> tuple[F64, F64]:
    """BatchNormModule::onForward: ``m * running + (1 - m) * batch`` with the biased batch variance; both
    running statistics start at 0 (_Const(0.0f)). Not trained: a forward side effect, not in any gradient."""
    rest = 1.0 - momentum  # _Const(1 - mMomentum): exact in float32 too (Sterbenz), so the same number
    return momentum * running_mean + rest * mean, momentum * running_var + rest * var


def relu6_forward(x: F64) -> F64:
    result: F64 = np.clip(x, RELU6_MIN, RELU6_MAX)
    return result


def relu6_backward(dy: F64, x: F64) -> F64:
    """Relu6Grad (grad/ReluGrad.cpp): ``(x > min) * (x < max) * dy``; strict, so 0 at both kinks."""
    result: F64 = dy * ((x > RELU6_MIN) & (x < RELU6_MAX))
    return result


# -- the model ---------------------------------------------------------------------------------------


def forward(params: Mapping[str, F64], images: F64, onehot: F64) -> Forward:
    """images [N, 1, 28, 28] scaled to [0, 1]; onehot [N, 10]. The cache holds BatchNorm's batch statistics as
    ``bn.mean`` and ``bn.var`` ([1, 8, 1, 1]) for batchnorm_running_update."""
    n = len(images)
    c: dict[str, F64] = {"x": images, "onehot": onehot}
    c["a1"], c["cols1"] = conv_forward(images, params["conv1.weight"], params["conv1.bias"])
    c["n1"], bn = batchnorm_train_forward(c["a1"], params["bn.scale"], params["bn.bias"])
    c.update({f"bn.{key}": value for key, value in bn.items()})
    c["p1"] = maxpool_forward(c["n1"])
    c["a2"] = deconv_depthwise_forward(c["p1"], params["conv2.weight"], params["conv2.bias"])
    c["p2"] = maxpool_forward(c["a2"])
    c["flat"] = c["p2"].reshape(n, -1, 1, 1)  # _Reshape(x, {0, -1, 1, 1}), NCHW: channel-major
    c["h"], c["cols3"] = conv_forward(c["flat"], params["ip1.weight"], params["ip1.bias"])
    c["r"] = relu6_forward(c["h"])
    c["z"], c["cols4"] = conv_forward(c["r"], params["ip2.weight"], params["ip2.bias"])
    probs = softmax(c["z"].reshape(n, -1))
    c["probs"] = probs
    return Forward(cross_entropy(probs, onehot), probs, c)


def backward(params: Mapping[str, F64], fwd: Forward) -> Params:
    """Gradients of the loss with respect to every parameter, shaped like the parameters."""
    c = fwd.cache
    g: Params = {}
    dz = cross_entropy_softmax_grad(c["probs"], c["onehot"]).reshape(c["z"].shape)
    dr, g["ip2.weight"], g["ip2.bias"] = conv_backward(dz, c["cols4"], params["ip2.weight"], c["r"].shape, True)
    assert dr is not None
    dh = relu6_backward(dr, c["h"])
    dflat, g["ip1.weight"], g["ip1.bias"] = conv_backward(dh, c["cols3"], params["ip1.weight"], c["flat"].shape, True)
    assert dflat is not None
    da2 = maxpool_backward(dflat.reshape(c["p2"].shape), c["a2"], c["p2"])
    dp1, g["conv2.weight"], g["conv2.bias"] = deconv_depthwise_backward(da2, c["p1"], params["conv2.weight"])
    dn1 = maxpool_backward(dp1, c["n1"], c["p1"])
    bn = {key: c[f"bn.{key}"] for key in ("xs", "s", "r", "xn")}
    da1, g["bn.scale"], g["bn.bias"] = batchnorm_train_backward(dn1, bn, params["bn.scale"])
    _, g["conv1.weight"], g["conv1.bias"] = conv_backward(
        da1, c["cols1"], params["conv1.weight"], c["x"].shape, need_dx=False
    )
    return {name: g[name].reshape(PARAM_SHAPES[name]) for name in PARAM_NAMES}


def sgd_step(
    params: Mapping[str, F64], grads: Mapping[str, F64], history: Mapping[str, F64], lr: float, sgd: SgdConfig
) -> tuple[Params, Params]:
    """One SGD::onGetNextParameter over every trainable parameter: (new parameters, new momentum history)."""
    new_params: Params = {}
    new_history: Params = {}
    for name in PARAM_NAMES:
        new_params[name], new_history[name] = sgd_update(
            params[name], grads[name], history[name], lr=lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay
        )
    return new_params, new_history


def as_params(tensors: Mapping[str, NDArray[np.floating]]) -> Params:
    """float64 copies in the reference's shapes (a driver may dump a bias as [8] or [1, 8])."""
    return {name: np.asarray(tensors[name], dtype=np.float64).reshape(PARAM_SHAPES[name]) for name in PARAM_NAMES}


def replay(
    init: Mapping[str, NDArray[np.floating]],
    images_u8: NDArray[np.uint8],
    labels: NDArray[np.uint8],
    steps: Sequence[Sequence[int]],
    sgd: SgdConfig | None = None,
) -> list[StepResult]:
    """Train from ``init`` on the given batches (row numbers per step; steps 0, 1, ...), independently of MNN."""
    sgd = sgd or SgdConfig()
    params = as_params(init)
    history: Params = {name: np.zeros(PARAM_SHAPES[name]) for name in PARAM_NAMES}
    out: list[StepResult] = []
    for number, indices in enumerate(steps):
        x, onehot = batch_inputs(images_u8, labels, indices)
        fwd = forward(params, x, onehot)
        grads = backward(params, fwd)
        lr = sgd.lr(number)
        params, history = sgd_step(params, grads, history, lr, sgd)
        out.append(StepResult(number, fwd.loss, lr, grads, {k: v.copy() for k, v in params.items()}))
    return out


# -- checking a driver's dumps (native/README.md "Dump files") ------------------------------------------------


RUNNING_STATS = ("bn.running_mean", "bn.running_var")  # the driver's step tensors (native/README.md, MnistV2)


def _load(path: Path | None, shape: tuple[int, ...]) -> F64:
    """A dump through gradcheck's loader (MissingDump: absent or unreadable), in the reference's shape where it has
    its size (a driver may dump a bias as [8] or [1, 8]); one of another size keeps its own shape, for gradcheck's
    guards (dump_defect, add_row) to name."""
    array = load_dump(path)
    return array.reshape(shape) if array.size == math.prod(shape) else array


def _usable(
    report: GradReport, step: int, what: str, arrays: Mapping[str, F64], shapes: Mapping[str, tuple[int, ...]]
) -> bool:
    """Whether the reference can start from these dumps; a wrong-size or non-finite one is the step's problem."""
    bad = [f"{n}: {why}" for n, a in arrays.items() if (why := dump_defect(a, shapes[n]))]
    if bad:
        report.problems.append(Problem(what, "before the step: " + "; ".join(bad), step=step))
    return not bad


def _params_before(report: GradReport, dumps: Dumps, step: int, at: int) -> Params | None:
    """The driver's parameters before step ``at`` (0: the initial ones), for step ``step``'s rows; None (with the
    problem) where one is missing, unreadable, of another size or not finite."""
    try:
        loaded = {n: _load(before_path(dumps, at, n), PARAM_SHAPES[n]) for n in PARAM_NAMES}
    except MissingDump as exc:
        report.problems.append(dump_problem(exc, step=step))
        return None
    return loaded if _usable(report, step, "bad parameters", loaded, PARAM_SHAPES) else None


def _running_rows(report: GradReport, dumps: Dumps, step: int, fwd: Forward, limit: Tolerance) -> None:
    """BatchNorm's running statistics after the step's forward, from the driver's previous ones (0 at step 0).
    Checked where the driver dumped them (kind "state"); they take no part in the gradient."""
    shape = fwd.cache["bn.mean"].shape
    try:
        obtained = [_load(dumps.step_file(step, f"{n}.npy"), shape) for n in RUNNING_STATS]
        previous = {
            n: np.zeros(shape) if step == 0 else _load(dumps.step_file(step - 1, f"{n}.npy"), shape)
            for n in RUNNING_STATS
        }
    except UnreadableDump as exc:
        report.problems.append(dump_problem(exc, step=step, kind="state"))
        return
    except MissingDump:  # not dumped: nothing to check
        return
    if not _usable(report, step, "bad state", previous, dict.fromkeys(RUNNING_STATS, shape)):
        return
    mean, var = previous.values()
    expected = batchnorm_running_update(mean, var, fwd.cache["bn.mean"], fwd.cache["bn.var"])
    for name, got, want in zip(RUNNING_STATS, obtained, expected, strict=True):
        add_row(report, name, step, "state", got, want, limit, None)


def _step_rows(
    report: GradReport, dumps: Dumps, step: int, inputs: tuple[F64, F64], sgd: SgdConfig, limit: Tolerance
) -> float | None:
    """The step's rows; returns the reference's loss (None when the driver's parameters cannot be used)."""
    before = _params_before(report, dumps, step, step)
    previous = _params_before(report, dumps, step, step - 1) if step > 0 and before is not None else before
    if before is None or previous is None:
        return None
    history = {n: previous[n] - before[n] for n in PARAM_NAMES}  # SGD's velocity: p_old - p_new
    fwd = forward(before, *inputs)
    grads = backward(before, fwd)
    after, _ = sgd_step(before, grads, history, sgd.lr(step), sgd)
    for name in PARAM_NAMES:
        for kind, expected in (("grad", grads[name]), ("after", after[name] - before[name])):
            try:
                obtained = _load(dumps.tensor(step, kind, name), PARAM_SHAPES[name])
            except MissingDump as exc:
                report.problems.append(dump_problem(exc, name, step, kind))
                continue
            if kind == "after" and obtained.shape == before[name].shape:
                obtained = obtained - before[name]
            add_row(report, name, step, kind, obtained, expected, limit, None)  # shape and NaN/Inf: problems
    _running_rows(report, dumps, step, fwd, limit)
    return fwd.loss


def _batch(report: GradReport, dumps: Dumps, step: int, rows: int) -> list[int] | None:
    """The step's training rows (batch_indices.npy), or None with the problem: missing, unreadable, or not row
    numbers of the training split (NaN, a fraction, out of range)."""
    try:
        indices = load_dump(dumps.step_file(step, "batch_indices.npy"))
    except MissingDump as exc:
        report.problems.append(dump_problem(exc, step=step))
        return None
    bad = nonfinite(indices)
    whole = indices.ndim == 1 and bool(np.all(indices == np.round(indices)))
    if bad is None and not (whole and np.all(indices >= 0) and np.all(indices < rows)):
        bad = f"not row numbers of the training split's {rows} rows (shape {indices.shape})"
    if bad:
        report.problems.append(Problem("bad inputs", f"batch_indices.npy: {bad}", step=step))
        return None
    return [int(i) for i in indices]


def check_dumps(
    dumps: Dumps,
    steps: Sequence[int],
    *,
    data_dir: Path = fixtures.MNIST,
    sgd: SgdConfig | None = None,
    tolerance: Tolerance | None = None,
    losses: Sequence[float] = (),
) -> GradReport:
    """A driver's MnistV2 dumps (obtained, float32) against this reference (golden, float64), per parameter:
    the gradient and the update (after - before); BatchNorm's running statistics where dumped. Step N starts
    from the driver's own parameters before it and its previous update as the momentum history
    (lenet.check_dumps does the same for Lenet), so each row measures one step's arithmetic. ``losses``
    (the driver's, per step) are checked too, to 1e-3 relative. Every dump goes through gradcheck's guards: a
    missing, unreadable, wrong-size or non-finite one is a problem with its reason, never a row that passes."""
    limit = tolerance or reference_tolerance()
    report = GradReport(f"numpy float64 MnistV2 reference vs MNN dumps in {dumps.root}")
    images, labels = load_train_split(data_dir)
    for step in steps:
        indices = _batch(report, dumps, step, len(images))
        if indices is None:
            continue
        inputs = batch_inputs(images, labels, indices)
        loss = _step_rows(report, dumps, step, inputs, sgd or SgdConfig(), limit)
        if loss is not None and step < len(losses) and not math.isclose(loss, losses[step], rel_tol=1e-3):
            report.problems.append(Problem("loss differs", f"MNN {losses[step]:.7f}, numpy {loss:.7f}", step=step))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mnnrepro.workloads.train.models.mnistv2 DUMPS [--init DIR] [--events FILE] [--steps 0,1]``:
    the agreement table of a driver run's dumps (--dump-dir, --save-init) with this reference."""
    parser = argparse.ArgumentParser(prog="python -m mnnrepro.workloads.train.models.mnistv2", description=main.__doc__)
    parser.add_argument("dumps", type=Path, help="the driver's --dump-dir (step<N>/{grad,after}/...)")
    parser.add_argument("--init", type=Path, help="the parameters step 0 started from (default: DUMPS/init)")
    parser.add_argument("--steps", default="0", help="comma-separated step numbers (default: 0)")
    parser.add_argument("--events", type=Path, help="the run's events.jsonl: its optimizer config and losses")
    parser.add_argument("--data", type=Path, default=fixtures.MNIST, help="the MNIST IDX directory")
    args = parser.parse_args(argv)
    init = args.init or args.dumps / "init"
    steps = [int(s) for s in args.steps.split(",") if s]
    record = read_events(args.events) if args.events else None
    sgd = sgd_config(record.start.get("config") or {}) if record else None
    losses = record.losses if record else ()
    report = check_dumps(Dumps(args.dumps, init), steps, data_dir=args.data, sgd=sgd, losses=losses)
    print(report.table())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
