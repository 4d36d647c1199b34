"""profiling stage: per-layer latency lookup tables measured on the device through TVM RPC, and the latency model.

`profiler.profile_model(bundle, device)` fills `<profiles folder>/<device>/lut.json` (resumable, reused across
models); `latency.LatencyModel.for_device(device)` predicts a network's latency from it (`predict_ms`,
`estimate`, `channel_steps`). The table models the MetaSchedule-tuned kernels `compile` ships: see `tuned`.
"""
