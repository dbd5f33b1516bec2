"""models.mnistv2: the independent numpy MnistV2 (forward, backward by hand, SGD) behind the mnistv2 golden."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mnnrepro import fixtures
from mnnrepro.gradcheck import Dumps, Tolerance
from mnnrepro.workloads.train.models import lenet
from mnnrepro.workloads.train.models import mnistv2 as ref
from mnnrepro.workloads.train.models.lenet import F64, Params


def random_params(rng: np.random.Generator) -> Params:
    params = {name: rng.normal(0.0, 0.1, shape) for name, shape in ref.PARAM_SHAPES.items()}
    params["bn.scale"] = 1.0 + rng.normal(0.0, 0.1, ref.PARAM_SHAPES["bn.scale"])
    return params


def random_case(seed: int, batch: int = 2) -> tuple[Params, F64, F64]:
    """Continuous random images: no max-pool ties, no ReLU6 input at exactly 0 or 6."""
    rng = np.random.default_rng(seed)
    return random_params(rng), rng.random((batch, 1, 28, 28)), np.eye(10)[rng.integers(0, 10, batch)]


def numeric_grad(f: Callable[[], float], array: F64, index: tuple[int, ...], eps: float = 1e-6) -> float:
    saved = array[index]
    array[index] = saved + eps
    up = f()
    array[index] = saved - eps
    down = f()
    array[index] = saved
    return (up - down) / (2 * eps)


def check_against_fd(f: Callable[[], float], array: F64, grad: F64, rng: np.random.Generator, tol: float) -> None:
    """The largest gradient elements and a few at random against central differences."""
    assert grad.shape == array.shape
    picks = [tuple(int(j) for j in np.unravel_index(int(i), grad.shape)) for i in np.argsort(np.abs(grad), None)[-3:]]
    picks += [tuple(int(rng.integers(0, d)) for d in grad.shape) for _ in range(3)]
    for index in picks:
        numeric = numeric_grad(f, array, index)
        assert abs(numeric - grad[index]) <= tol * max(1.0, abs(numeric)), (index, numeric, grad[index])


def test_shapes_through_the_net() -> None:
    params, images, onehot = random_case(seed=1, batch=3)
    fwd = ref.forward(params, images, onehot)
    c = fwd.cache
    assert c["a1"].shape == (3, 8, 24, 24)
    assert c["p1"].shape == (3, 8, 12, 12)
    assert c["a2"].shape == (3, 8, 16, 16)  # ConvTranspose 5x5, VALID, stride 1: 12 -> 16
    assert c["p2"].shape == (3, 8, 8, 8)
    assert c["flat"].shape == (3, 512, 1, 1)
    assert c["flat"][1, 2 * 64 + 3 * 8 + 5, 0, 0] == c["p2"][1, 2, 3, 5]  # channel-major, _Reshape in NCHW
    assert c["h"].shape == (3, 100, 1, 1)
    assert fwd.probs.shape == (3, 10)
    assert np.allclose(fwd.probs.sum(axis=1), 1.0)
    grads = ref.backward(params, fwd)
    assert list(grads) == list(ref.PARAM_NAMES)
    assert {name: g.shape for name, g in grads.items()} == ref.PARAM_SHAPES


def test_whole_net_gradients_match_central_differences_in_smooth_regions() -> None:
    params, images, onehot = random_case(seed=3)
    params["ip1.weight"] *= 4.0  # wide enough for ip1's outputs to reach past 6
    fwd = ref.forward(params, images, onehot)
    grads = ref.backward(params, fwd)
    h = fwd.cache["h"]
    # ReLU6 clips on both sides here, so the masks are exercised, not just passed through
    assert (h < 0).any() and (h > 6).any() and ((h > 0) & (h < 6)).any()
    rng = np.random.default_rng(0)
    for name in ref.PARAM_NAMES:
        check_against_fd(lambda: ref.forward(params, images, onehot).loss, params[name], grads[name], rng, 1e-6)
        if name != "conv1.bias":
            assert np.abs(grads[name]).max() > 1e-4, f"{name}: gradient near zero, the check above proved little"


def test_conv1_bias_gradient_is_zero_behind_batchnorm() -> None:
    """BatchNorm subtracts the batch mean, so conv1's bias cannot change the loss: MNN's float32 gradient for it
    is pure rounding noise, and a relative metric on it is meaningless (the reference's is ~1e-17)."""
    params, images, onehot = random_case(seed=4)
    grads = ref.backward(params, ref.forward(params, images, onehot))
    assert np.abs(grads["conv1.bias"]).max() <= 1e-12 * np.abs(grads["conv1.weight"]).max()


def test_batchnorm_chain_rule_equals_the_textbook_gradient_and_finite_differences() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0.3, 2.0, (3, 4, 5, 5))
    scale, bias = rng.normal(1.0, 0.2, (1, 4, 1, 1)), rng.normal(0.0, 0.2, (1, 4, 1, 1))
    weights = rng.normal(0.0, 1.0, x.shape)  # loss = sum(y * weights)
    y, cache = ref.batchnorm_train_forward(x, scale, bias)
    # biased batch variance over N, H, W, per channel
    assert np.allclose(cache["var"][0, :, 0, 0], x.var(axis=(0, 2, 3)))
    assert np.allclose(y.mean(axis=(0, 2, 3)), bias[0, :, 0, 0])
    dx, dscale, dbias = ref.batchnorm_train_backward(weights, cache, scale)
    m = x.size / 4
    xn, r = cache["xn"], cache["r"]
    sums = (weights.sum(axis=(0, 2, 3), keepdims=True), (weights * xn).sum(axis=(0, 2, 3), keepdims=True))
    textbook = scale * r / m * (m * weights - sums[0] - xn * sums[1])
    assert np.allclose(dx, textbook, rtol=1e-10, atol=1e-12)
    loss = lambda: float(np.sum(ref.batchnorm_train_forward(x, scale, bias)[0] * weights))  # noqa: E731
    for array, grad in ((x, dx), (scale, dscale), (bias, dbias)):
        check_against_fd(loss, array, grad, rng, 1e-6)


def test_batchnorm_running_statistics_update() -> None:
    """m * running + (1 - m) * batch, m = 0.999 (NN::BatchNorm's default); the biased variance; from 0."""
    zero = np.zeros((1, 2, 1, 1))
    mean, var = np.full((1, 2, 1, 1), 2.0), np.full((1, 2, 1, 1), 4.0)
    rest = float(np.float32(1.0) - np.float32(0.999))  # _Const(1 - mMomentum): float32, 0.00099998713
    rm, rv = ref.batchnorm_running_update(zero, zero, mean, var)
    assert rm[0, :, 0, 0].tolist() == [rest * 2.0] * 2
    assert rv[0, :, 0, 0].tolist() == [rest * 4.0] * 2
    assert rm[0, 0, 0, 0] == pytest.approx(0.002, rel=1e-4)
    rm2, _ = ref.batchnorm_running_update(rm, rv, mean, var)
    assert rm2[0, 0, 0, 0] == pytest.approx(0.999 * 0.002 + 0.001 * 2.0, rel=1e-4)


def test_depthwise_deconv_adds_the_unflipped_kernel_and_its_gradients_match() -> None:
    x = np.zeros((1, 2, 12, 12))
    x[0, 1, 3, 4] = 2.0
    weight = np.arange(50, dtype=np.float64).reshape(2, 1, 5, 5)
    bias = np.array([0.5, -1.0])
    y = ref.deconv_depthwise_forward(x, weight, bias)
    assert y.shape == (1, 2, 16, 16)
    assert np.all(y[0, 0] == 0.5)  # channel 0's input is zero: bias only (depthwise, no mixing)
    assert np.array_equal(y[0, 1, 3:8, 4:9], 2.0 * weight[1, 0] - 1.0)  # top-left at the input pixel, not flipped
    rng = np.random.default_rng(6)
    x, weight, bias = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(3, 1, 5, 5)), rng.normal(size=3)
    weights = rng.normal(size=(2, 3, 10, 10))
    dx, dw, db = ref.deconv_depthwise_backward(weights, x, weight)
    loss = lambda: float(np.sum(ref.deconv_depthwise_forward(x, weight, bias) * weights))  # noqa: E731
    for array, grad in ((x, dx), (weight, dw), (bias, db)):
        check_against_fd(loss, array, grad, rng, 1e-7)


def test_relu6_gradient_is_strict_at_both_kinks_like_relu6grad() -> None:
    x = np.array([-1.0, 0.0, 1e-9, 3.0, 6.0 - 1e-9, 6.0, 7.0])
    assert ref.relu6_forward(x).tolist() == [0.0, 0.0, 1e-9, 3.0, 6.0 - 1e-9, 6.0, 6.0]
    assert ref.relu6_backward(np.full(7, 2.0), x).tolist() == [0.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0]


def _split_ties(dy: F64, x: F64, y: F64) -> F64:
    """Not MNN's rule: a window's gradient shared evenly by its ties (the true derivative when ties move
    together)."""
    n, c, h, w = x.shape
    hit = x.reshape(n, c, h // 2, 2, w // 2, 2) >= y[:, :, :, None, :, None]
    share = hit / hit.sum(axis=(3, 5), keepdims=True)
    result: F64 = (share * dy[:, :, :, None, :, None]).reshape(n, c, h, w)
    return result


def test_maxpool_ties_on_mnist_borders_each_get_the_full_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """On MNIST's blank borders conv1 outputs its bias, so both pools see windows of exact ties. MNN
    (GeometryPoolGrad) gives each tie the window's whole gradient; shifting BatchNorm's bias moves the ties
    together, so a finite difference sees the window's gradient once. The reference must differ from finite
    differences there, and agree once the rule is replaced by an even split: that is what the ties cost."""
    images, labels = lenet.load_train_split(fixtures.MNIST)
    x, onehot = lenet.batch_inputs(images, labels, [0, 1])
    params = random_params(np.random.default_rng(7))
    fwd = ref.forward(params, x, onehot)
    a1 = fwd.cache["n1"].reshape(2, 8, 12, 2, 12, 2)
    assert ((a1 == a1.max(axis=(3, 5), keepdims=True)).sum(axis=(3, 5)) > 1).any()  # ties at pool 1
    loss = lambda: ref.forward(params, x, onehot).loss  # noqa: E731
    numeric = np.array([numeric_grad(loss, params["bn.bias"], (0, ch, 0, 0)) for ch in range(8)])
    mnn_rule = ref.backward(params, fwd)["bn.bias"].reshape(-1)
    assert np.abs(mnn_rule - numeric).max() > 1e-3 * np.abs(numeric).max()
    monkeypatch.setattr(ref, "maxpool_backward", _split_ties)
    split = ref.backward(params, fwd)["bn.bias"].reshape(-1)
    assert np.allclose(split, numeric, rtol=1e-6, atol=1e-9)


def test_sgd_step_decays_and_updates_every_trainable_parameter_batchnorm_included() -> None:
    params, images, onehot = random_case(seed=8)
    grads = ref.backward(params, ref.forward(params, images, onehot))
    history = {name: np.full(shape, 0.01) for name, shape in ref.PARAM_SHAPES.items()}
    sgd = lenet.SgdConfig()
    new, velocity = ref.sgd_step(params, grads, history, 0.1, sgd)
    assert list(new) == list(ref.PARAM_NAMES)
    for name in ref.PARAM_NAMES:
        expected_v = 0.1 * (grads[name] + sgd.weight_decay * params[name]) + sgd.momentum * 0.01
        assert np.allclose(velocity[name], expected_v, rtol=1e-12, atol=0)
        assert np.allclose(new[name], params[name] - expected_v, rtol=1e-12, atol=0)


def test_replay_trains_from_init_step_by_step() -> None:
    rng = np.random.default_rng(9)
    params = random_params(rng)
    images_u8 = rng.integers(0, 256, (4, 784), dtype=np.uint8)
    labels = np.array([1, 2, 3, 4], dtype=np.uint8)
    out = ref.replay(params, images_u8, labels, [[0, 1], [2, 3]])
    assert [s.step for s in out] == [0, 1]
    x, onehot = lenet.batch_inputs(images_u8, labels, [2, 3])
    first = out[0].after
    v0 = {n: params[n] - first[n] for n in ref.PARAM_NAMES}
    grads1 = ref.backward(first, ref.forward(first, x, onehot))
    assert np.allclose(out[1].grads["bn.scale"], grads1["bn.scale"])
    second, _ = ref.sgd_step(first, grads1, v0, out[1].lr, lenet.SgdConfig())
    assert np.allclose(out[1].after["ip1.weight"], second["ip1.weight"])


# -- check_dumps: a driver's dump tree against the reference --------------------------------------------------


def write_dumps(root: Path, steps: int) -> list[float]:
    """A dump tree as the driver writes it (native/README.md), float32, made by the reference itself; returns
    the losses."""
    images, labels = lenet.load_train_split(fixtures.MNIST)
    init = random_params(np.random.default_rng(10))
    (root / "init").mkdir(parents=True)
    for name in ref.PARAM_NAMES:
        np.save(root / "init" / f"{name}.npy", init[name].astype(np.float32))
    batches = [[3, 1, 4, 1], [5, 9, 2, 6]][:steps]
    params = {n: init[n].astype(np.float32).astype(np.float64) for n in ref.PARAM_NAMES}
    running = (np.zeros((1, 8, 1, 1)), np.zeros((1, 8, 1, 1)))
    history = {n: np.zeros(ref.PARAM_SHAPES[n]) for n in ref.PARAM_NAMES}
    losses = []
    for step, batch in enumerate(batches):
        x, onehot = lenet.batch_inputs(images, labels, batch)
        fwd = ref.forward(params, x, onehot)
        losses.append(fwd.loss)
        grads = ref.backward(params, fwd)
        params, history = ref.sgd_step(params, grads, history, lenet.SgdConfig().lr(step), lenet.SgdConfig())
        running = ref.batchnorm_running_update(*running, fwd.cache["bn.mean"], fwd.cache["bn.var"])
        d = root / f"step{step}"
        for kind, values in (("grad", grads), ("after", params)):
            (d / kind).mkdir(parents=True)
            for name in ref.PARAM_NAMES:
                np.save(d / kind / f"{name}.npy", values[name].astype(np.float32))
        np.save(d / "batch_indices.npy", np.array(batch, dtype=np.float32))
        for name, value in zip(ref.RUNNING_STATS, running, strict=True):
            np.save(d / f"{name}.npy", value.astype(np.float32))
        params = {n: v.astype(np.float32).astype(np.float64) for n, v in params.items()}
    return losses


LIMIT = Tolerance(1e-4, 0.99999, 1e-8, "test")


def test_check_dumps_agrees_with_a_float32_copy_of_itself(tmp_path: Path) -> None:
    losses = write_dumps(tmp_path, steps=2)
    report = ref.check_dumps(Dumps(tmp_path, tmp_path / "init"), [0, 1], tolerance=LIMIT, losses=losses)
    assert not report.problems, report.table()
    # 10 parameters x (grad, after) + 2 running statistics, per step
    assert len(report.rows) == 2 * (2 * len(ref.PARAM_NAMES) + 2)
    assert {r.kind for r in report.rows} == {"grad", "after", "state"}
    failed = [(r.name, r.step, r.kind) for r in report.rows if not r.passed]
    # conv1.bias: a zero gradient in float32 rounding; its relative metrics say nothing (see the test above)
    assert {name for name, _, _ in failed} <= {"conv1.bias"}, report.table()
    assert max(r.max_rel for r in report.rows if r.name != "conv1.bias") > 0  # float32 is not float64


def test_check_dumps_names_a_wrong_gradient_and_a_missing_file(tmp_path: Path) -> None:
    write_dumps(tmp_path, steps=1)
    path = tmp_path / "step0" / "grad" / "conv2.weight.npy"
    grad = np.load(path)
    grad[3, 0, 2, 1] += 0.05 * np.abs(grad).max()
    np.save(path, grad)
    (tmp_path / "step0" / "after" / "ip2.bias.npy").unlink()
    report = ref.check_dumps(Dumps(tmp_path, tmp_path / "init"), [0], tolerance=LIMIT, losses=[9.0])
    bad = [r for r in report.rows if not r.passed and r.name != "conv1.bias"]
    assert [(r.name, r.kind, r.worst_index) for r in bad] == [("conv2.weight", "grad", (3, 0, 2, 1))]
    problems = [(p.what, p.name, p.kind) for p in report.problems]
    assert problems == [("missing file", "ip2.bias", "after"), ("loss differs", "", "")]
    assert not report.passed


def test_check_dumps_without_initial_parameters_is_a_problem_not_a_pass(tmp_path: Path) -> None:
    write_dumps(tmp_path, steps=1)
    report = ref.check_dumps(Dumps(tmp_path, None), [0], tolerance=LIMIT)
    assert not report.passed
    assert report.problems and report.problems[0].what == "missing file"
    assert not report.rows


# -- gradcheck's guards on every dump the reference reads (a code review of issue 24) --------------------------------


def _check(root: Path) -> list[tuple[str, str, str]]:
    report = ref.check_dumps(Dumps(root, root / "init"), [0, 1], tolerance=LIMIT)
    assert not report.passed
    return [(p.what, p.name, p.kind) for p in report.problems]


def test_a_truncated_dump_is_a_problem_with_its_reason_never_a_crash(tmp_path: Path) -> None:
    write_dumps(tmp_path, steps=2)
    grad = tmp_path / "step1" / "grad" / "ip1.weight.npy"
    np.save(grad, np.load(grad).ravel()[:1000])  # a dump cut short: fewer values than the tensor has
    after = tmp_path / "step1" / "after" / "bn.scale.npy"
    after.write_bytes(after.read_bytes()[:-9])  # a file cut short: numpy cannot read it
    report = ref.check_dumps(Dumps(tmp_path, tmp_path / "init"), [0, 1], tolerance=LIMIT)
    assert not report.passed
    problems = [(p.what, p.name, p.step, p.kind) for p in report.problems]
    assert problems == [("unreadable file", "bn.scale", 1, "after"), ("shape mismatch", "ip1.weight", 1, "grad")]
    assert report.problems[0].detail.startswith(f"{after} (unreadable: ")
    assert "obtained (1000,), golden (100, 512, 1, 1)" in report.problems[1].detail
    assert {(r.name, r.step) for r in report.rows} >= {("ip1.weight", 0), ("bn.scale", 0), ("ip1.weight", 1)}


def test_an_unreadable_starting_point_is_the_steps_problem(tmp_path: Path) -> None:
    write_dumps(tmp_path, steps=2)
    after = tmp_path / "step0" / "after" / "bn.scale.npy"  # step 0's result, and step 1's starting point
    after.write_bytes(after.read_bytes()[:-9])
    report = ref.check_dumps(Dumps(tmp_path, tmp_path / "init"), [0, 1], tolerance=LIMIT)
    problems = [(p.what, p.name, p.step, p.kind) for p in report.problems]
    assert problems == [("unreadable file", "bn.scale", 0, "after"), ("unreadable file", "", 1, "")]
    assert not any(r.step == 1 for r in report.rows) and not report.passed


def test_a_nan_dump_is_a_problem_never_a_row(tmp_path: Path) -> None:
    write_dumps(tmp_path, steps=2)
    grad = tmp_path / "step0" / "grad" / "conv2.weight.npy"
    values = np.load(grad)
    values[0, 0, 1, 1] = np.nan
    np.save(grad, values)
    report = ref.check_dumps(Dumps(tmp_path, tmp_path / "init"), [0], tolerance=LIMIT)
    assert [(p.what, p.name, p.kind) for p in report.problems] == [("non-finite", "conv2.weight", "grad")]
    assert "1 NaN, 0 Inf of 200 (first at (0, 0, 1, 1))" in report.problems[0].detail
    assert ("conv2.weight", "grad") not in {(r.name, r.kind) for r in report.rows}


def test_parameters_the_reference_cannot_start_from_are_named(tmp_path: Path) -> None:
    write_dumps(tmp_path, steps=2)
    init = tmp_path / "init" / "bn.bias.npy"
    np.save(init, np.full(np.load(init).shape, np.inf, np.float32))
    np.save(tmp_path / "init" / "conv1.bias.npy", np.zeros(7, np.float32))
    report = ref.check_dumps(Dumps(tmp_path, tmp_path / "init"), [0, 1], tolerance=LIMIT)
    assert [(p.what, p.step) for p in report.problems] == [("bad parameters", 0), ("bad parameters", 1)]
    detail = report.problems[0].detail  # step 1's momentum history starts from the initial parameters too
    assert "conv1.bias: shape (7,), not (8,)" in detail and "bn.bias: 0 NaN, 8 Inf of 8" in detail
    assert not report.rows and not report.passed


def test_nan_running_statistics_are_problems(tmp_path: Path) -> None:
    write_dumps(tmp_path, steps=2)
    np.save(tmp_path / "step0" / "bn.running_mean.npy", np.full((1, 8, 1, 1), np.nan, np.float32))
    report = ref.check_dumps(Dumps(tmp_path, tmp_path / "init"), [0, 1], tolerance=LIMIT)
    problems = [(p.what, p.name, p.step, p.kind) for p in report.problems]
    assert problems == [("non-finite", "bn.running_mean", 0, "state"), ("bad state", "", 1, "")]
    assert "bn.running_mean: 8 NaN, 0 Inf of 8" in report.problems[1].detail
    assert not report.passed
