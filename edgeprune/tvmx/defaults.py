"""Tuning defaults shared by the API and the CLI (import-free so `edgeprune --help` stays fast)."""

# MetaSchedule trials per task at compile, for a shape the device's database has no record of: the pruned
# variant's new shapes (those on the latency table's grid were recorded when profiling).
TRIALS = 16
# Trials per task when `profile` tunes the full-width network once: the records every later compile reuses.
# Measured on resnet20 3x32x32, 1 thread, evolutionary + xgb, NCHW16c (bench/results/runtime-layers.md): 32 brought
# its kernels level with ONNX Runtime's, layer by layer; it took 12 min on 2 loaded cores.
PROFILE_TRIALS = 32
