"""The low-level TVM layer both `compile` and `profiling` use: PyTorch -> ONNX -> Relax (`export`), MetaSchedule
tuning on a device and builds from its database (`tune`), a family's tuned schedule re-applied to other shapes
(`transplant`). Stages sit above it; it knows no stage.
"""
