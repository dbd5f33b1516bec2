"""MNN's own op and gradient tests (issue 13), a workload room: ``optest`` (the test binary mnn_optest, one cell's
sweep, each test's outcome), ``optest_batch`` (standalone: runs where the runner runs), ``judge`` (statuses,
expectations), ``report`` (table, summary.json, junit, Markdown) and ``session`` (``mnnrepro ops run``)."""
