"""Defaults shared by the profiling API and the CLI (kept import-free so `edgeprune --help` stays fast)."""

REPEAT = 5  # time_evaluator repeats per measurement: the table keeps their median and spread
NUMBER = 10  # runs per repeat (time_evaluator raises it so a repeat lasts at least MIN_REPEAT_MS)
MIN_REPEAT_MS = 20
TRIALS = 16  # MetaSchedule trials per task of the full-width network: the anchors entries reuse
MAX_GRID_POINTS = 4  # per channel dimension by default: the step grows with the layer's width
