"""Image generators behind one step-wise protocol (``generation.base.Generator``)."""
