"""The `knee_drr` TFDS data set (DESIGN 2.6). Importing the builder module registers it."""
