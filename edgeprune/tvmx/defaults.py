"""Tuning defaults shared by the API and the CLI (import-free so `edgeprune --help` stays fast)."""

# MetaSchedule trials per task at compile, for a shape the device's database has no record of: the pruned
# variant's new shapes (those on the latency table's grid were recorded when profiling).
TRIALS = 16
# Trials per task when `profile` tunes the full-width network once: the records every later compile reuses.
# Measured on resnet20 3x32x32, 1 thread, evolutionary + xgb (bench/results/runtime.md, runtime-layers.md): at 32
# its NCHW16c kernels (the default layout, NCHWc) were level with ONNX Runtime's, 1.01x end to end (NCHW: 1.58x);
# 32 took 6.5 min (NCHWc) to 14 min on 2 loaded cores, 64 twice that for ~10% more.
PROFILE_TRIALS = 32
