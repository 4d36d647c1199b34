"""Defaults shared by the profiling API and the CLI (kept import-free so `edgeprune --help` stays fast)."""

MAX_GRID_POINTS = 4  # per channel dimension by default: the step grows with the layer's width
