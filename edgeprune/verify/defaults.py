"""Defaults shared by the verify API and the CLI (import-free so `edgeprune --help` stays fast)."""

RTOL = 1e-4  # outputs match PyTorch when |tvm - torch| <= ATOL + RTOL * |torch|, elementwise
ATOL = 1e-4
# a verdict TOO CLOSE TO CALL takes more samples, up to this many times --repeat in all, before it is said
MORE_SAMPLES = 4
# a run's one reference measurement of the unpruned network: median within +-1% (95%); each round's judged interval too
REFERENCE_PRECISION = 0.01
