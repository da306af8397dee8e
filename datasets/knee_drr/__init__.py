"""`knee_drr` (docs/design.md, "The knee_drr data set"); importing its builder registers it."""
