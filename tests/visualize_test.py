"""Pictures: grids of images in [0, 1], the data preview and the phantom quick look."""
import os

import matplotlib.image
import numpy as np
import pytest

from helpers import TINY
from score_sde_knee import phantom
from score_sde_knee import visualize


def test_grid_shows_images_on_a_fixed_unit_scale(tmp_path):
  # A 0.5 image must come out mid-grey, not stretched to white: the scale is [0, 1].
  path = str(tmp_path / 'g.png')
  visualize.save_grid(path, [[np.full((8, 8), 0.5)], [np.ones((8, 8, 1))]], dpi=50)
  assert os.listdir(tmp_path) == ['g.png']
  png = matplotlib.image.imread(path)[..., :3].mean(axis=-1)
  half = png.shape[0] // 2
  grey, white = np.median(png[:half]), np.median(png[half:])
  assert white == pytest.approx(1.0, abs=0.02)
  assert grey == pytest.approx(0.5, abs=0.05)


def test_data_preview_names_missing_data(tmp_path):
  with pytest.raises(FileNotFoundError, match='knee_drr/phantom_64 is not built'):
    visualize.data_preview('phantom_64', str(tmp_path / 'p.png'), data_dir=str(tmp_path))


def test_data_preview_writes_a_row_per_view(data_dir, tmp_path):
  out = visualize.data_preview(TINY.name, str(tmp_path / 'p.png'), data_dir=data_dir,
                               num_patients=1, angles=(0.0, 60.0))
  assert matplotlib.image.imread(out).shape[0] > matplotlib.image.imread(out).shape[1] / 3
  with pytest.raises(ValueError, match='no views at angles'):
    visualize.data_preview(TINY.name, str(tmp_path / 'q.png'), data_dir=data_dir,
                           angles=(1.0,))


def test_phantom_png(tmp_path):
  path = str(tmp_path / 'ph.png')
  visualize.save_phantom_png(path, phantom.make_phantom(1, spacing_mm=8.0))
  assert os.listdir(tmp_path) == ['ph.png'] and os.path.getsize(path) > 1000


def _runs(on: np.ndarray) -> int:
  """How many separate stretches of True a 1-D boolean array holds."""
  return int(on[0]) + int(np.sum(on[1:] & ~on[:-1]))


def test_grid_keeps_rows_and_columns_apart_under_tall_titles(tmp_path):
  # Four-line column titles on a wide grid once squeezed the rows until they touched.
  path = str(tmp_path / 'g.png')
  visualize.save_grid(path, [[np.zeros((16, 16))] * 12 for _ in range(4)],
                      col_titles=['pc 25\npred=ancestral\nsnr=0.8\nt0=0.5'] * 12,
                      row_titles=[f'#{i}' for i in range(4)], dpi=60)
  dark = matplotlib.image.imread(path)[..., :3].mean(axis=-1) < 0.5
  x = np.flatnonzero(dark.mean(axis=0) > 0.3)  # columns of pixels through the images
  y = np.flatnonzero(dark.mean(axis=1) > 0.3)
  assert _runs(dark[:, x[len(x) // 2]]) == 4  # four separate image rows
  assert _runs(dark[y[len(y) // 2]]) == 12
