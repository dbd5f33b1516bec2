"""MNIST training (issues 4, 24), a workload room: ``workload`` (what one training cell runs, read from the
matrix's [workloads.NAME] tables, and MODELS: per driver model its parameters and reference), ``session`` (``mnnrepro
run``: plan, run, judge and report training cells), ``golden`` (``mnnrepro golden``: a CPU golden, checked against
its model's reference before it is written) and ``models/`` (one independent float64 numpy reference per driver
model: ``lenet``, ``mnistv2``). A model is data: its native file, its reference module here and a line in
``workload.MODELS``."""
