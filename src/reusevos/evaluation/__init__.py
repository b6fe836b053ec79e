"""DAVIS evaluation: J (region IoU), F (boundary F-measure) and the benchmark statistics."""
