"""Small helpers every layer uses: atomic files, progress lines, plots, XLA:CPU flags."""
