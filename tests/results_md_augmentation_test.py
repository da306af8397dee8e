"""The augmentation table of benchmarks/RESULTS.md and README's sentence on it, against
benchmarks/results/augmentation_cpu.json.

Every cell is recomputed with numpy from the per-seed Dice of the file (mean over seeds of
each seed's mean over the test images, ddof-0 std of those means), not read from the row
summary the benchmark wrote, so a slip in either shows."""
import re

import numpy as np
import pytest

from helpers import load_result, mean_std, read, rounded, table_rows

RESULTS_MD = read('benchmarks', 'RESULTS.md')
README = read('README.md')
RESULT = load_result('augmentation_cpu.json')
K1 = {r['name']: r for r in load_result('augmentation_k1_cpu.json')['regimes']}
ALL_MASKS = {r['name']: r for r in load_result('augmentation_all_masks_cpu.json')['regimes']}
ROWS = {r['name']: r for r in RESULT['regimes']}
HEADER = '| regime (knee_drr 2.0.0, phantom_64) |'
KEYS = ('name', 'k', 'generator', 'mask_source', 'n_real', 'n_synthetic', 'dice_bone_mean',
        'dice_bone_std', 'dice_leg_mean', 'dice_leg_std', 'seeds')


def _over_seeds(row: dict, metric: str) -> tuple[float, float]:
  means = np.array([s[f'{metric}_mean'] for s in row['seeds']])
  return float(means.mean()), float(means.std())


def _gap_closed(row: dict) -> float:
  base = _over_seeds(ROWS[f"real-{row['k']}"], 'dice_bone')[0]
  top = _over_seeds(ROWS['ceiling'], 'dice_bone')[0]
  return (_over_seeds(row, 'dice_bone')[0] - base) / (top - base)


def test_the_file_has_every_key_the_benchmark_promises():
  assert RESULT['machine']['cpu'] and RESULT['versions']['jax'] and RESULT['date']
  for row in RESULT['regimes']:
    assert set(KEYS) <= set(row), row['name']
    assert row['generator'] in ('none', 'classic', 'ctm', 'unet', 'csm')
    assert len(row['seeds']) == RESULT['settings']['seeds']


@pytest.mark.parametrize('name', sorted(ROWS))
def test_table_cells_match_the_per_seed_results(name):
  rows = table_rows(RESULTS_MD, HEADER)
  assert set(rows) == set(ROWS)
  generator, masks, images, bone, leg, gap, quality, labels = rows[name]
  row = ROWS[name]
  assert generator == row['generator'] and masks == row['mask_source']
  assert images == f"{row['n_real']} + {row['n_synthetic']}"
  for cell, metric in ((bone, 'dice_bone'), (leg, 'dice_leg')):
    mean, std = mean_std(cell)
    want_mean, want_std = _over_seeds(row, metric)
    assert mean == pytest.approx(rounded(want_mean, cell.split('±')[0].strip()), abs=1e-9)
    assert std == pytest.approx(rounded(want_std, cell.split('±')[1].strip()), abs=1e-9)
  if name.startswith('real-') and '+' in name:
    assert float(gap) == pytest.approx(rounded(_gap_closed(row), gap), abs=1e-9)
  else:
    assert gap == ''
  if row['mask_source'] == 'other_patients':
    mean, std = mean_std(quality)
    assert (mean, std) == (round(row['synthetic_psnr_mean'], 2),
                           round(row['synthetic_psnr_std'], 2))
  else:
    assert quality == '' and 'synthetic_psnr_mean' not in row
  if row['mask_source'] != 'none':
    mean, std = mean_std(labels)
    assert (mean, std) == (round(row['label_dice_bone_mean'], 4),
                           round(row['label_dice_bone_std'], 4))
  else:
    assert labels == '' and 'label_dice_bone_mean' not in row


def test_the_csm_bullet_quotes_its_gaps_and_labels():
  section = RESULTS_MD.split('## Do the synthetic radiographs help a segmenter?')[1].split(
      '\n## ')[0]
  bullet = section.split("- **CSM's images hurt")[1].split('\n- ')[0]
  for k in (2, 4):
    csm = ROWS[f'real-{k}+csm']
    for name in (f'real-{k}+csm', f'real-{k}+csm:deformed'):
      assert f'{_gap_closed(ROWS[name]):.2f}' in bullet, name
    assert f"{csm['synthetic_psnr_mean']:.1f}" in bullet
    assert f"{csm['label_dice_bone_mean']:.2f}" in bullet
    # '0.98-0.99 in CTM's and the U-Net's', from either kind of mask
    others = [ROWS[f'real-{k}+{g}']['label_dice_bone_mean']
              for g in ('ctm', 'unet', 'ctm:deformed', 'unet:deformed')]
    assert all(0.975 <= x < 0.995 for x in others) and '0.98-0.99' in bullet
  # the judge's own score on the real test views, quoted with the column's definition
  assert f"scores {ROWS['ceiling']['seeds'][0]['dice_bone_mean']:.4f}" in section


def test_the_all_masks_bullet_follows_from_its_file():
  section = RESULTS_MD.split('## Do the synthetic radiographs help a segmenter?')[1].split(
      '\n## ')[0]
  bullet = section.split('- **More masks do not help at k = 2.**')[1].split('\n- ')[0]
  bullet = ' '.join(bullet.split())
  ctm, base, top = ALL_MASKS['real-2+ctm'], ALL_MASKS['real-2'], ALL_MASKS['ceiling']
  gap = (_over_seeds(ctm, 'dice_bone')[0] - _over_seeds(base, 'dice_bone')[0]) / (
      _over_seeds(top, 'dice_bone')[0] - _over_seeds(base, 'dice_bone')[0])
  mean, std = _over_seeds(ctm, 'dice_bone')
  assert f'close {gap:.2f} of the gap ({mean:.4f} ± {std:.4f})' in bullet
  few = ROWS['real-2+ctm']
  assert f"against {_gap_closed(few):.2f} from {few['n_synthetic']}" in bullet
  assert f"all {ctm['n_synthetic']} masks" in bullet
  assert f"{ctm['synthetic_psnr_mean']:.1f} dB" in bullet
  # The stages said to be copied from the main workdir: the same per-seed results.
  for name in ('real-2', 'ceiling'):
    assert ALL_MASKS[name]['seeds'] == ROWS[name]['seeds'], name
  assert abs(gap - _gap_closed(ROWS['real-2+ctm'])) < 2 * std / (
      _over_seeds(top, 'dice_bone')[0] - _over_seeds(base, 'dice_bone')[0])


def test_the_smallest_k_follows_from_the_seed_spread():
  # k = 1 alone (its own file) is not clearly below the ceiling; the table's smallest k is.
  section = RESULTS_MD.split('## Do the synthetic radiographs help a segmenter?')[1].split(
      '\n## ')[0]
  ratio = lambda base, top: ((_over_seeds(top, 'dice_bone')[0] - _over_seeds(
      base, 'dice_bone')[0]) / _over_seeds(base, 'dice_bone')[1])
  k1 = ratio(K1['real-1'], K1['ceiling'])
  assert k1 < 5 and f'{k1:.1f} times' in section
  mean, std = _over_seeds(K1['real-1'], 'dice_bone')
  assert f'{mean:.4f} ± {std:.4f}' in section
  assert _over_seeds(K1['ceiling'], 'dice_bone') == _over_seeds(ROWS['ceiling'], 'dice_bone')
  ks = sorted({r['k'] for r in RESULT['regimes'] if r['k'] is not None})
  for k in ks:
    assert f'{ratio(ROWS[f"real-{k}"], ROWS["ceiling"]):.1f} times' in section, k
  assert ratio(ROWS[f'real-{ks[0]}'], ROWS['ceiling']) >= 5


def test_readme_quotes_the_gap_closed():
  section = README.split('## Do the synthetic radiographs help?')[1].split('\n## ')[0]
  quoted = [float(x) for x in re.findall(r'-?\d+\.\d+', section)]
  for k in (2, 4):
    for name in (f'real-{k}+ctm', f'real-{k}+unet', f'real-{k}+classic'):
      assert round(_gap_closed(ROWS[name]), 2) in quoted, name
  for name in ('real-2', 'real-4', 'ceiling'):
    assert round(_over_seeds(ROWS[name], 'dice_bone')[0], 3) in quoted, name
