"""models.lenet: the independent numpy Lenet (forward, backward, MNN's SGD) that vouches for the CPU golden."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mnnrepro.gradcheck import GOLDEN_ROOT
from mnnrepro.workloads.train.models import lenet as ref
from mnnrepro.workloads.train.models.lenet import verify_golden


def random_case(seed: int, batch: int = 2) -> tuple[ref.Params, ref.F64, ref.F64, ref.F64]:
    """Random parameters and continuous random images: no ties in max-pool, no ReLU input at exactly 0."""
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(0.0, 0.1, shape) for name, shape in ref.PARAM_SHAPES.items()}
    images = rng.random((batch, 1, 28, 28))
    onehot = np.eye(10)[rng.integers(0, 10, batch)]
    mask = rng.choice([0.0, 2.0], (batch, 500))
    return params, images, onehot, mask


def test_gradients_match_central_finite_differences() -> None:
    params, images, onehot, mask = random_case(seed=3)
    grads = ref.backward(params, ref.forward(params, images, onehot, mask))
    rng = np.random.default_rng(0)
    eps = 1e-6
    for name in ref.PARAM_NAMES:
        g = grads[name]
        assert g.shape == ref.PARAM_SHAPES[name]
        # the largest gradient elements (never all zero) and a few at random
        picks = [
            tuple(int(j) for j in np.unravel_index(int(i), g.shape)) for i in np.argsort(np.abs(g), axis=None)[-3:]
        ]
        picks += [tuple(int(rng.integers(0, d)) for d in g.shape) for _ in range(3)]
        for index in picks:
            saved = params[name][index]
            params[name][index] = saved + eps
            up = ref.forward(params, images, onehot, mask).loss
            params[name][index] = saved - eps
            down = ref.forward(params, images, onehot, mask).loss
            params[name][index] = saved
            numeric = (up - down) / (2 * eps)
            assert abs(numeric - g[index]) <= 1e-6 * max(1.0, abs(numeric)), (name, index, numeric, g[index])
        assert np.abs(g).max() > 0, f"{name}: gradient is all zero, the check above proved nothing"


def test_loss_is_the_batch_mean_of_cross_entropy() -> None:
    """MNN's _CrossEntropy: -mean over the batch of sum(log(p) * onehot) (Loss.cpp), not a sum."""
    params, images, onehot, mask = random_case(seed=5, batch=1)
    one = ref.forward(params, images, onehot, mask)
    twice = ref.forward(params, np.concatenate([images, images]), np.concatenate([onehot] * 2), np.tile(mask, (2, 1)))
    assert twice.loss == pytest.approx(one.loss, rel=1e-12)
    assert one.loss == pytest.approx(-math.log(float(one.probs[0, int(np.argmax(onehot[0]))])), rel=1e-12)


def test_maxpool_ties_all_receive_the_gradient_like_mnn() -> None:
    """GeometryPoolGrad: every element >= the window's max gets the full gradient (a blank MNIST border)."""
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, :, 2:] = [[1.0, 3.0], [2.0, 3.0]]  # left window: four ties at 0; right window: two ties at 3
    y = ref.maxpool_forward(x)
    dx = ref.maxpool_backward(np.array([[[[5.0, 7.0]]]]), x, y)
    assert y.tolist() == [[[[0.0, 3.0]]]]
    assert dx[0, 0].tolist() == [[5.0, 5.0, 0.0, 7.0], [5.0, 5.0, 0.0, 7.0]]


def test_flatten_is_channel_major_like_reshape_then_convert_nchw() -> None:
    params, images, onehot, mask = random_case(seed=7, batch=1)
    cache = ref.forward(params, images, onehot, mask).cache
    p2 = cache["p2"]
    assert p2.shape == (1, 50, 4, 4)
    assert cache["flat"][0, 1 * 16 + 2 * 4 + 3] == p2[0, 1, 2, 3]


def test_sgd_update_on_hand_numbers() -> None:
    # v = lr * (g + wd * p) + m * v;  p -= v
    p, v = ref.sgd_update(np.array([1.0]), np.array([0.5]), np.array([0.2]), lr=0.1, momentum=0.9, weight_decay=0.01)
    assert v[0] == pytest.approx(0.1 * (0.5 + 0.01 * 1.0) + 0.9 * 0.2)  # 0.231
    assert p[0] == pytest.approx(1.0 - 0.231)


def test_sgd_is_caffe_style_not_pytorch_style_when_lr_changes() -> None:
    """Caffe keeps lr inside the history (v1 = lr1*g1 + m*lr0*g0); PyTorch multiplies it out (lr1*(g1 + m*g0))."""
    p0, g0, g1, lr0, lr1, m = np.array([0.0]), np.array([1.0]), np.array([1.0]), 0.1, 0.05, 0.9
    p1, v1 = ref.sgd_update(p0, g0, np.zeros(1), lr=lr0, momentum=m, weight_decay=0.0)
    p2, _ = ref.sgd_update(p1, g1, v1, lr=lr1, momentum=m, weight_decay=0.0)
    caffe = -(lr0 * 1.0) - (lr1 * 1.0 + m * lr0 * 1.0)  # -0.24
    pytorch = -(lr0 * 1.0) - lr1 * (1.0 + m * 1.0)  # -0.195
    assert p2[0] == pytest.approx(caffe)
    assert p2[0] != pytest.approx(pytorch)


def test_lr_inv_is_mnns_schedule() -> None:
    assert ref.lr_inv(0.01, 0, 1e-4, 0.75) == pytest.approx(0.01)
    assert ref.lr_inv(0.01, 100, 1e-4, 0.75) == pytest.approx(0.01 * 1.01**-0.75)
    assert ref.SgdConfig().lr(1) == pytest.approx(0.01 * (1 + 1e-4) ** -0.75)


def test_replay_runs_from_init_and_reports_each_step() -> None:
    params, images, _, mask = random_case(seed=11, batch=2)
    labels = np.array([3, 7], dtype=np.uint8)
    images_u8 = (images.reshape(2, 784) * 255).astype(np.uint8)
    steps = [ref.StepInputs((0, 1), mask), ref.StepInputs((1, 0), mask)]
    out = ref.replay(params, images_u8, labels, steps)
    assert [s.step for s in out] == [0, 1]
    assert out[0].lr > out[1].lr
    # step 1's parameters are step 0's after; its update includes momentum
    first_update = out[0].after["ip2.weight"] - params["ip2.weight"]
    assert np.allclose(first_update, -out[0].lr * (out[0].grads["ip2.weight"] + 5e-4 * params["ip2.weight"]))


def test_read_idx_rejects_a_file_that_is_not_idx(tmp_path: Path) -> None:
    bad = tmp_path / "x"
    bad.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        ref.read_idx(bad)
    short = tmp_path / "y"
    short.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")
    with pytest.raises(ValueError, match="dimensions"):
        ref.read_idx(short)


def test_the_checked_in_golden_agrees_with_the_numpy_reference() -> None:
    """The golden under fixtures/golden is what every backend is judged by; it must match float64 numpy."""
    golden = GOLDEN_ROOT / "mnist" / "3.3.0"
    report = verify_golden(golden)
    assert report.passed, report.table()
    assert len(report.rows) == 2 * 2 * len(ref.PARAM_NAMES)  # steps 0, 1 x grad, after x 8 tensors
    assert max(r.max_rel for r in report.rows) > 0  # MNN's float32 CPU is not bit-equal to float64


def test_a_golden_with_a_wrong_gradient_fails_the_reference_check(tmp_path: Path) -> None:
    import shutil

    golden = tmp_path / "3.3.0"
    shutil.copytree(GOLDEN_ROOT / "mnist" / "3.3.0", golden)
    path = golden / "step1" / "grad" / "conv2.weight.npy"
    grad = np.load(path)
    grad[7, 3, 2, 1] += 0.05 * np.abs(grad).max()
    np.save(path, grad)
    report = verify_golden(golden)
    assert not report.passed
    failed = {(r.name, r.step, r.kind) for r in report.rows if not r.passed}
    assert failed == {("conv2.weight", 1, "grad")}
    assert next(r for r in report.rows if not r.passed).worst_index == (7, 3, 2, 1)
