"""Grids of images in [0, 1]: a fixed grey scale, rows and columns kept apart."""
import os

import matplotlib.image
import numpy as np
import pytest

from score_sde_knee.utils import plots


def test_grid_shows_images_on_a_fixed_unit_scale(tmp_path):
  # A 0.5 image must come out mid-grey, not stretched to white: the scale is [0, 1].
  path = str(tmp_path / 'g.png')
  plots.save_grid(path, [[np.full((8, 8), 0.5)], [np.ones((8, 8, 1))]], dpi=50)
  assert os.listdir(tmp_path) == ['g.png']
  png = matplotlib.image.imread(path)[..., :3].mean(axis=-1)
  half = png.shape[0] // 2
  grey, white = np.median(png[:half]), np.median(png[half:])
  assert white == pytest.approx(1.0, abs=0.02)
  assert grey == pytest.approx(0.5, abs=0.05)


def _runs(on: np.ndarray) -> int:
  """How many separate stretches of True a 1-D boolean array holds."""
  return int(on[0]) + int(np.sum(on[1:] & ~on[:-1]))


def test_grid_keeps_rows_and_columns_apart_under_tall_titles(tmp_path):
  # Four-line column titles on a wide grid once squeezed the rows until they touched.
  path = str(tmp_path / 'g.png')
  plots.save_grid(path, [[np.zeros((16, 16))] * 12 for _ in range(4)],
                      col_titles=['pc 25\npred=ancestral\nsnr=0.8\nt0=0.5'] * 12,
                      row_titles=[f'#{i}' for i in range(4)], dpi=60)
  dark = matplotlib.image.imread(path)[..., :3].mean(axis=-1) < 0.5
  x = np.flatnonzero(dark.mean(axis=0) > 0.3)  # columns of pixels through the images
  y = np.flatnonzero(dark.mean(axis=1) > 0.3)
  assert _runs(dark[:, x[len(x) // 2]]) == 4  # four separate image rows
  assert _runs(dark[y[len(y) // 2]]) == 12
