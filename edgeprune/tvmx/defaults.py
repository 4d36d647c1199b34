"""Tuning defaults shared by the API and the CLI (import-free so `edgeprune --help` stays fast)."""

# MetaSchedule trials per task: the budget the latency table's kernels were tuned with, so the table models
# the kernels `compile` ships. 8 took resnet20 (width 0.5, 3x32x32) from 6.7 ms untuned to 0.55 ms.
TRIALS = 16
