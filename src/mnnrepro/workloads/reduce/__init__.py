"""The reducer (issue 14), a workload room: ``search`` (from a crash to a minimal graph that still crashes) and
``session`` (``mnnrepro reduce``: capture, search, the reduced graph checked alone)."""
