"""edgeprune: profile a board once, prune a CNN to a millisecond budget, compile it with TVM, deploy it."""

__version__ = "0.1.0"
