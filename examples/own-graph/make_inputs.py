"""The input values of make_graph.cpp's graph, in the reducer's tensor store (inputs/manifest.tsv + raw files):
python3 make_inputs.py DIR (numpy, seed 0)."""

import sys
from pathlib import Path

import numpy as np

shapes = {"x": (8, 16), "target": (8, 4), "w": (16, 4), "b": (4,)}
out = Path(sys.argv[1]) / "inputs"
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
lines = []
for i, (name, shape) in enumerate(shapes.items()):
    value = rng.standard_normal(shape).astype(np.float32) * (0.25 if name == "w" else 1.0)
    value.tofile(out / f"t{i}.bin")
    lines.append(f"{name}\tf32\tNCHW\t{','.join(map(str, shape))}\tt{i}.bin\n")
(out / "manifest.tsv").write_text("".join(lines))
print(f"wrote {len(lines)} inputs to {out}")
