"""The workloads (issue 23, ../shared/design/ARCHITECTURE.md "The next shape"): each a room that plans its cells
from data, runs and judges them, and reports; ``base`` holds the protocol they implement and the one session loop
that owns the tail (interrupts, not-run cells, held signals, reports, table, exit code)."""
