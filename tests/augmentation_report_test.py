"""benchmarks/augmentation_report.py: the summary over seeds, the gap closed, and each
synthetic set scored once however many regimes share it."""
import os

import pytest

from benchmarks import augmentation as aug
from benchmarks import augmentation_report as ar
from score_sde_knee.utils import files


def _write_result(workdir, name, seed, bone, leg, n_real=6, n_synthetic=0):
  files.write_json(os.path.join(workdir, 'seg', name, f'seed{seed}', 'result.json'), {
      'dice_bone_mean': bone, 'dice_bone_std': 0.1, 'dice_leg_mean': leg,
      'dice_leg_std': 0.2, 'num_images': 3, 'n_real': n_real, 'n_synthetic': n_synthetic})


def test_summary_over_seeds_and_the_gap_closed(tmp_path):
  values = {'real-2': (0.5, 0.7), 'real-2+classic': (0.55, 0.8), 'real-2+ctm': (0.6, 0.9),
            'ceiling': (0.9, 0.95)}  # per-seed bone means: value, value + 0.1
  for name, (bone, leg) in values.items():
    for seed in range(2):
      _write_result(tmp_path, name, seed, bone + 0.1 * seed, leg)
  rows = {r['name']: r for r in ar.summarize(
      str(tmp_path), 2,
      aug.parse_regimes(['real-k', 'real-k+classic', 'real-k+ctm', 'ceiling'], (2,)))}
  ctm = rows['real-2+ctm']
  assert ctm['dice_bone_mean'] == pytest.approx(0.65)
  assert ctm['dice_bone_std'] == pytest.approx(0.05)  # std over seeds of 0.6 and 0.7
  assert ctm['dice_bone_image_std'] == pytest.approx(0.1)
  assert ctm['dice_leg_mean'] == pytest.approx(0.9) and ctm['dice_leg_std'] == pytest.approx(0)
  assert ctm['gap_closed'] == pytest.approx((0.65 - 0.55) / (0.95 - 0.55))
  assert rows['real-2+classic']['gap_closed'] == pytest.approx(0.05 / 0.4)
  assert 'gap_closed' not in rows['real-2'] and 'gap_closed' not in rows['ceiling']
  assert [p['seed'] for p in ctm['seeds']] == [0, 1]
  assert ctm['seeds'][1]['dice_bone_mean'] == pytest.approx(0.7)


def test_each_synthetic_set_is_scored_once_and_only_real_masks_get_a_psnr(monkeypatch):
  calls = []
  monkeypatch.setattr(ar, 'synthetic_quality', lambda w, g, k, masks, train: (
      calls.append(('quality', g, k)), {'synthetic_psnr_mean': 20.0 + k})[1])
  monkeypatch.setattr(ar, 'label_agreement', lambda w, g, k, src, params, config, batch_size: (
      calls.append(('labels', g, k, src, params, batch_size)), {'label_dice_bone_mean': 0.5})[1])
  regimes = aug.parse_regimes(['real-k', 'real-k+ctm', 'real-k+ctm+classic',
                               'real-k+ctm:deformed', 'ceiling'], (2,))
  rows = [{'name': r.name, 'generator': r.generator, 'k': r.k, 'mask_source': r.mask_source}
          for r in regimes]
  subsets = {'k': {'2': {'masks': [5, 6]}}}
  ar.score_synthetic('w', rows, subsets, None, None)
  assert calls == [('quality', 'ctm', 2)]
  by_name = {r['name']: r for r in rows}
  assert by_name['real-2+ctm']['synthetic_psnr_mean'] == 22.0
  assert by_name['real-2+ctm+classic']['synthetic_psnr_mean'] == 22.0
  assert set(by_name['real-2+ctm:deformed']) == {'name', 'generator', 'k', 'mask_source'}
  calls.clear()
  ar.score_synthetic('w', rows, subsets, None, ('params', 'config'), batch_size=8)
  assert calls == [('quality', 'ctm', 2), ('labels', 'ctm', 2, 'other_patients', 'params', 8),
                   ('labels', 'ctm', 2, 'deformed', 'params', 8)]
  assert by_name['real-2+ctm:deformed']['label_dice_bone_mean'] == 0.5
  assert 'label_dice_bone_mean' not in by_name['real-2'] | by_name['ceiling']
