"""multiview_figure: which views are shown, the slices' planes and orientation, the file."""
import numpy as np
from PIL import Image

from score_sde_knee import multiview_figure


def test_view_columns_spread_over_the_orbit():
  assert multiview_figure.view_columns(60) == [0, 10, 20, 30, 40, 50]
  assert multiview_figure.view_columns(4) == [0, 1, 2, 3]
  assert multiview_figure.view_columns(9, shown=3) == [0, 3, 6]


def test_mid_slices_are_the_three_planes_superior_up():
  z, y, x = np.meshgrid(np.arange(4), np.arange(6), np.arange(8), indexing='ij')
  volume = (100 * z + 10 * y + x).astype(np.float32)
  axial, coronal, sagittal = multiview_figure.mid_slices(volume)
  np.testing.assert_array_equal(axial, volume[2])  # (y, x) at the middle z
  assert coronal.shape == (4, 8) and sagittal.shape == (4, 6)
  assert coronal[0, 0] == 300 + 30 and coronal[-1, 0] == 30  # top row: the largest z
  assert sagittal[0, 5] == 300 + 50 + 4


def test_save_writes_views_and_slices(tmp_path):
  rng = np.random.default_rng(0)
  views = {n: rng.uniform(size=(8, 16, 16, 1)) for n in ('independent', 'consistent')}
  volumes = {n: rng.uniform(size=(10, 12, 12)) for n in views}
  path = str(tmp_path / 'figure.png')
  multiview_figure.save(path, views, np.arange(8) * 45.0, volumes, (3.0, 2.0, 2.0), 'leg')
  with Image.open(path) as im:
    assert im.width > 400 and im.height > 300  # 6 columns, 4 rows
  assert multiview_figure.display_range([np.zeros((2, 2, 2))]) == (0.0, 1.0)
