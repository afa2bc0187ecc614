"""Cost: price tables, spend so far, and the value of spot capacity."""
