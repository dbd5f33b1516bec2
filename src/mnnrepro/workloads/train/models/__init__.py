"""The training models' independent float64 numpy references, one module per driver model (--model,
native/README.md): ``lenet`` (with the pieces other models share: convolution, max pool, softmax, cross entropy,
MNN's SGD and learning rate, MNIST data) and ``mnistv2``. Each checks a driver's dumps (``check_dumps``) and is
named by its line in workloads.train.workload.MODELS."""
