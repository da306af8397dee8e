"""The phantom quick look and the knee_drr data preview write their PNGs."""
import os

import matplotlib.image
import pytest

from datasets.knee_drr import preview as data_preview_lib
from helpers import TINY
from score_sde_knee.xray import phantom
from score_sde_knee.xray import preview


def test_data_preview_names_missing_data(tmp_path):
  with pytest.raises(FileNotFoundError, match='knee_drr/phantom_64 is not built'):
    data_preview_lib.data_preview('phantom_64', str(tmp_path / 'p.png'), data_dir=str(tmp_path))


def test_data_preview_writes_a_row_per_view(data_dir, tmp_path):
  out = data_preview_lib.data_preview(TINY.name, str(tmp_path / 'p.png'), data_dir=data_dir,
                                     num_patients=1, angles=(0.0, 60.0))
  assert matplotlib.image.imread(out).shape[0] > matplotlib.image.imread(out).shape[1] / 3
  with pytest.raises(ValueError, match='no views at angles'):
    data_preview_lib.data_preview(TINY.name, str(tmp_path / 'q.png'), data_dir=data_dir,
                                 angles=(1.0,))


def test_phantom_png(tmp_path):
  path = str(tmp_path / 'ph.png')
  preview.save_phantom_png(path, phantom.make_phantom(1, spacing_mm=8.0))
  assert os.listdir(tmp_path) == ['ph.png'] and os.path.getsize(path) > 1000


def test_drr_comparison_png(tmp_path):
  path = str(tmp_path / 'cmp.png')
  phantom.main(['--seed', '1', '--spacing', '8', '--compare_png', path])
  img = matplotlib.image.imread(path)
  assert img.shape[0] > img.shape[1] and os.path.getsize(path) > 1000
