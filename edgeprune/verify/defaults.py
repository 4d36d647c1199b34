"""Defaults shared by the verify API and the CLI (import-free so `edgeprune --help` stays fast)."""

REPEAT = 15  # time_evaluator repeats: the median and half the interquartile range are reported
NUMBER = 10  # runs per repeat (time_evaluator raises it so a repeat lasts at least MIN_REPEAT_MS)
MIN_REPEAT_MS = 50
RTOL = 1e-4  # outputs match PyTorch when |tvm - torch| <= ATOL + RTOL * |torch|, elementwise
ATOL = 1e-4
