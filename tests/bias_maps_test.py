"""experiments.bias_maps: the distance bands against a half-plane leg, and the whole script
on a workdir whose model outputs exactly zero (so that its draws' error is minus the truth)."""
import json
import os

import jax
import numpy as np
import pytest

from experiments import bias_maps
from experiments import posterior_mean
from configs import unet
from helpers import TINY
from helpers import read_split
from helpers import make_workdir


def test_error_by_distance_matches_a_half_plane_leg():
  # The leg is columns 10..19, so a pixel in column x lies x - 9 px inside it (x >= 10) or
  # 10 - x px outside (x < 10); columns 18-19 are bone, which the bands leave out. Two
  # draws are off by x + 1 and x - 1: their mean error is x, a single draw's squared error
  # x^2 + 1, so each band's figures are those of its columns.
  cb = np.zeros((2, 8, 20, 1))
  cb[:, :, 10:] = 0.5
  cb[:, :, 18:] = 1.0
  truth = np.full((2, 8, 20, 1), 0.25)
  x = np.arange(20.0)[:, None]
  draws = np.stack([truth + x + 1, truth + x - 1])
  rows = bias_maps.error_by_distance(draws, truth, cb)
  # Bands (lo, hi] of signed distance -> columns: <= -4: 0..6; -3, -2: 7, 8; -1: 9; 1: 10;
  # 2, 3: 11, 12; 4..6: 13..15; >= 7: 16, 17 (18, 19 are bone).
  columns = [range(0, 7), range(7, 9), [9], [10], range(11, 13), range(13, 16), [16, 17]]
  assert [r['band_px'] for r in rows] == [[None, -3.5], [-3.5, -1.5], [-1.5, 0.0],
                                          [0.0, 1.5], [1.5, 3.5], [3.5, 6.5], [6.5, None]]
  assert [r['pixels'] for r in rows] == [2 * 8 * len(c) for c in columns]
  total = np.sum(np.arange(20.0)**2 + 1)  # per image row, bone columns included
  for r, c in zip(rows, columns):
    c = np.asarray(c, np.float64)
    assert r['error'] == pytest.approx(c.mean()) and r['truth'] == pytest.approx(0.25)
    assert r['mse'] == pytest.approx(np.mean(c**2 + 1))
    assert r['sq_error_share'] == pytest.approx(np.sum(c**2 + 1) / total)
  # A band without pixels gets None, not NaN (which JSON cannot hold).
  empty = bias_maps.error_by_distance(draws, truth, cb, edges=(-100.0, -50.0))
  assert empty == [{'band_px': [-100.0, -50.0], 'pixels': 0, 'error': None, 'mse': None,
                    'sq_error_share': None, 'truth': None}]
  json.dumps(rows)  # finite edges and None only


def test_signed_distance_is_euclidean_inside_and_out():
  leg = np.zeros((1, 9, 9), bool)
  leg[0, 4, 4] = True  # one leg pixel: outside, the distance to it
  d = bias_maps.signed_distance(leg)
  yy, xx = np.mgrid[:9, :9]
  expected = -np.hypot(yy - 4, xx - 4)
  expected[4, 4] = 1.0  # inside: one pixel to the nearest outside pixel
  np.testing.assert_allclose(d[0], expected)


def test_bias_maps_of_a_zero_model_are_minus_the_truth(tmp_path, data_dir, capsys):
  config = unet.get_config('contour_bone,test')
  config.data.data_dir, config.data.builder_config = data_dir, TINY.name
  config.eval.num_images, config.eval.batch_size = 0, 6
  # Zero parameters: every draw is exactly 0, so the draws' shared error is -truth.
  wd = make_workdir(tmp_path / 'unet', config, lambda p: jax.tree.map(lambda x: x * 0, p))
  out = tmp_path / 'pm'
  posterior_mean.run(wd, 2, 'pc:2', None, str(out), first_seed=7)
  posterior_mean.run(wd, 2, 'pc:3', None, str(out), step=2, first_seed=7)
  newest = str(out / 'posterior_unet_contour_bone_pc-2.json')
  stepped = str(out / 'posterior_unet_contour_bone_pc-3_step2.json')
  x = np.stack([t['image'] for t in read_split(data_dir)]).astype(np.float64)

  got = bias_maps.load(newest)
  assert got['draws'].shape == (2,) + x.shape and got['seeds'] == [7, 8]
  np.testing.assert_allclose(bias_maps.mean_error(got['draws'], got['images']),
                             -x[..., 0], atol=1e-6)
  leg = got['contour_bone'] >= 0.25
  soft = leg & (got['contour_bone'] < 0.75)
  assert got['error_by_region']['soft_tissue'] == pytest.approx(-x[soft].mean(), abs=1e-6)
  assert sum(r['pixels'] for r in got['error_by_distance']) == (
      got['contour_bone'] < 0.75).sum()

  # Files from before `draw_dirs`: found from the workdir, with or without --step.
  for path in (newest, stepped):
    with open(path, encoding='utf-8') as f:
      r = json.load(f)
    dirs = r.pop('draw_dirs')
    assert bias_maps.draw_dirs(r) == dirs
    assert ('step_2' in dirs[0]) == (path == stepped)
    r['seeds'] = [9, 10]  # never drawn
    with pytest.raises(FileNotFoundError, match=r"No cached draws of 'pc:\d'.*--first_seed"):
      bias_maps.draw_dirs(r)

  # Draws that are not the ones the file measured (here: the file edited) are refused.
  with open(newest, encoding='utf-8') as f:
    r = json.load(f)
  r['mean_error_by_region']['bone'] += 0.01
  edited = tmp_path / 'edited.json'
  edited.write_text(json.dumps(r), encoding='utf-8')
  with pytest.raises(ValueError, match='edited.json: the cached draws give region errors'):
    bias_maps.load(str(edited))

  png = tmp_path / 'maps' / 'b.png'
  os.makedirs(png.parent)
  bias_maps.main([newest, stepped, '--labels', 'two', 'three', '--images', '2',
                  '--out', str(png)])
  printed = json.loads(capsys.readouterr().out)
  assert printed['out'] == [str(png), str(tmp_path / 'maps' / 'b_profile.png')]
  assert printed['images'] == [0, len(x) - 1]
  assert [f['setting'] for f in printed['files']] == ['pc:2', 'pc:3']
  assert os.path.getsize(png) > 0 and os.path.getsize(printed['out'][1]) > 0
  # --images 0: the profile only.
  only = tmp_path / 'maps' / 'p.png'
  bias_maps.main([newest, '--images', '0', '--out', str(only)])
  assert json.loads(capsys.readouterr().out)['out'] == [str(tmp_path / 'maps' / 'p_profile.png')]
  assert not only.exists() and (tmp_path / 'maps' / 'p_profile.png').exists()
  with pytest.raises(SystemExit):
    bias_maps.main([newest, '--labels', 'a', 'b'])
