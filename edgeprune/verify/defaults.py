"""Defaults shared by the verify API and the CLI (import-free so `edgeprune --help` stays fast)."""

RTOL = 1e-4  # outputs match PyTorch when |tvm - torch| <= ATOL + RTOL * |torch|, elementwise
ATOL = 1e-4
