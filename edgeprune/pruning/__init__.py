"""pruning stage."""
