"""benchmarks/augmentation_figure.py: the gap panel's bars, cut at its floor; the samples
figure's tiles come from the files the benchmark's stages write, each in its place;
generators not run leave blanks."""
import os

import numpy as np

from benchmarks import augmentation_figure as af


def _write(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.save(path, array)


def _fake_workdir(root):
  """synth sets as stage 3 leaves them: CTM and the U-Net on other patients' masks, CTM on
  deformed ones, no CSM. Every array has its own constant value."""
  value = iter(np.linspace(0.01, 0.99, 100))
  made = {}
  for gen, src in (('ctm', 'other_patients'), ('unet', 'other_patients'), ('ctm', 'deformed')):
    for j in range(5):
      for kind, name in (('masks', f'm{j:05d}.npy'), ('samples', f'm{j:05d}_s0.npy')):
        made[gen, src, kind, j] = np.full((8, 8, 1), next(value), np.float32)
        _write(os.path.join(root, 'synth', f'{gen}_k2_{src}', kind, name),
               made[gen, src, kind, j])
  return made


def test_samples_rows_put_each_file_in_its_column(tmp_path):
  made = _fake_workdir(str(tmp_path))
  subsets = {'k': {'2': {'masks': [10, 11, 12, 13, 14]}}}
  train = {i: {'image': np.full((8, 8, 1), i / 100, np.float32),
               'contour_bone': np.zeros((8, 8, 1), np.float32)} for i in range(10, 15)}
  rows, cols, titles = af.samples_rows(str(tmp_path), (2,), subsets, train)
  assert titles == ['k = 2, mask 0', 'k = 2, mask 2', 'k = 2, mask 4']
  assert len(cols) == 9 and all(len(r) == 9 for r in rows)
  for row, j in zip(rows, (0, 2, 4)):
    np.testing.assert_array_equal(row[0], made['ctm', 'other_patients', 'masks', j])
    np.testing.assert_allclose(np.squeeze(row[1]), (10 + j) / 100, rtol=1e-6)
    np.testing.assert_array_equal(row[2], made['ctm', 'other_patients', 'samples', j])
    np.testing.assert_array_equal(row[3], made['unet', 'other_patients', 'samples', j])
    np.testing.assert_array_equal(row[5], made['ctm', 'deformed', 'masks', j])
    np.testing.assert_array_equal(row[6], made['ctm', 'deformed', 'samples', j])
    assert row[4] is None and row[7] is None and row[8] is None  # CSM, deformed U-Net
  path = os.path.join(str(tmp_path), 'samples.png')
  af.save_samples_figure(str(tmp_path), (2,), subsets, train, path)
  assert os.path.getsize(path) > 5_000


def test_gap_bars_cut_what_falls_below_the_floor_and_scale_the_spread_by_the_gap():
  row = lambda name, k, gen, src, bone, std, gap=None, augment=False: {
      'name': name, 'k': k, 'generator': gen, 'mask_source': src, 'augment': augment,
      'dice_bone_mean': bone, 'dice_bone_std': std, 'gap_closed': gap}
  rows = [row('real-2', 2, 'none', 'none', 0.90, 0.01),
          row('real-2+ctm', 2, 'ctm', 'other_patients', 0.94, 0.02, 0.4),
          row('real-2+csm:deformed', 2, 'csm', 'deformed', 0.60, 0.03, -3.0),
          row('real-2+ctm+classic', 2, 'ctm', 'other_patients', 0.95, 0.005, 0.5, True),
          row('real-2+classic', 2, 'none', 'none', 0.93, 0.01, 0.3, True),
          row('ceiling', None, 'none', 'none', 1.00, 0.0)]
  bars = {b['name']: b for b in af.gap_bars(rows)}
  assert list(bars) == ['real-2+ctm', 'real-2+csm:deformed', 'real-2+ctm+classic',
                        'real-2+classic']
  assert bars['real-2+ctm']['height'] == 0.4 and bars['real-2+ctm']['label'] == ''
  assert [b['dice'] for b in bars.values()] == [0.94, 0.60, 0.95, 0.93]
  assert np.isclose(bars['real-2+ctm']['err'], 0.02 / (1.00 - 0.90))
  csm = bars['real-2+csm:deformed']
  assert (csm['height'], csm['err'], csm['label'], csm['hatch']) == (af.GAP_FLOOR, 0.0,
                                                                     '-3.00', '//')
  assert bars['real-2+ctm+classic']['edge'] == af.COLORS['classic'] != bars['real-2+ctm']['edge']
  assert bars['real-2+classic']['color'] == af.COLORS['classic']
  assert bars['real-2+classic']['edge'] == 'white'
