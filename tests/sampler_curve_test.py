"""benchmarks.sampler_curve: the samples grid and the NFE axis of its plot."""
import os

import numpy as np
import pytest

from benchmarks import sampler_curve
from configs import ctm
from helpers import TINY
from helpers import read_split
from score_sde_knee.utils import files
from score_sde_knee import run_config
from score_sde_knee.utils import plots


def test_samples_grid_shows_the_same_images_for_every_setting(tmp_path, data_dir,
                                                               monkeypatch):
  wd = str(tmp_path / 'run')
  c = ctm.get_config('contour,test')
  c.data.data_dir, c.data.builder_config = data_dir, TINY.name
  run_config.save(c, wd)
  rng = np.random.default_rng(0)
  ref, fast = (rng.uniform(0, 1, (6, 16, 16, 1)).astype(np.float32) for _ in range(2))
  files.write_npz(os.path.join(wd, 'eval', 'contour', 'samples.npz'), samples=ref,
                  indices=np.arange(6))
  # The fast setting lacks image 0 (e.g. an interrupted run): only 1..5 are common.
  files.write_npz(os.path.join(wd, 'eval_samplers', 'contour', 'pc-25-predancestral',
                               'samples.npz'), samples=fast[1:], indices=np.arange(1, 6))
  grids = []
  monkeypatch.setattr(plots, 'save_grid',
                      lambda path, rows, **kw: grids.append((path, rows, kw)))
  sampler_curve.save_samples_grid(wd, 'contour', ['pc:25:pred=ancestral'], 'g.png', 2)
  (path, rows, kw), = grids
  truth = read_split(data_dir)
  assert path == 'g.png' and len(rows) == 2
  for row, i in zip(rows, (1, 5)):
    np.testing.assert_array_equal(row[0], truth[i]['contour'])
    np.testing.assert_array_equal(row[1], ref[i])
    np.testing.assert_array_equal(row[2], fast[i])
    np.testing.assert_array_equal(row[3], truth[i]['image'])
  assert kw['col_titles'] == ['condition', f'PC N={c.sde.num_scales}',
                              'pc 25\npred=ancestral', 'ground truth']


@pytest.mark.parametrize('nfes, scale', [([49], 'linear'), ([46, 49, 49], 'linear'),
                                         ([19, 29, 35, 46, 49, 99], 'log'),
                                         ([35, 49, 99, 199, 999], 'log')])
def test_nfe_axis_ticks_are_the_nfes_run_and_never_crowd(nfes, scale):
  got_scale, ticks = sampler_curve.nfe_axis(nfes)
  assert got_scale == scale
  assert ticks[0] == min(nfes) and set(ticks) <= set(nfes)
  span = [*nfes, 50]  # the goal line is on the axis too
  f = np.log if scale == 'log' else float
  width = f(max(span)) - f(min(span)) or 1.0
  assert all((f(b) - f(a)) / width >= 0.1 for a, b in zip(ticks, ticks[1:]))


def test_curve_plot_with_every_setting_at_one_nfe(tmp_path):
  rows = [{'method': 'csm', 'condition': c, 'setting': s, 'nfe': 49 if sec else 999,
           'seconds': sec, 'psnr': p} for c in ('contour', 'contour_bone')
          for s, sec, p in (('pc:500 (reference)', None, 22.0), ('pc:25:snr=0.8', 5.0, 21.5),
                            ('pc:25:snr=0.8,t0=0.5', 5.0, 21.9))]
  sampler_curve.plot(rows, str(tmp_path / 'curve.png'))
  assert os.path.getsize(tmp_path / 'curve.png') > 1000
