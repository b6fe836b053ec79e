"""Offline training of the refinement network and the dynamic (reuse) network."""
