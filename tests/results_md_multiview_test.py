"""The multi-view table of benchmarks/RESULTS.md and README's summary of it, against
benchmarks/results/multiview_cpu.json.

Each cell is recomputed with numpy from the per-patient records (mean and ddof-0 std over
patients), not taken from the summary the benchmark wrote, so a slip in either shows."""
import re

import numpy as np
import pytest

from helpers import load_result, mean_std, read, rounded, table_rows

RESULTS_MD = read('benchmarks', 'RESULTS.md')
README = read('README.md')
RESULT = load_result('multiview_cpu.json')
FAST = RESULT['samplers']['fast']
HEADER = '| set (CTM contour+bone, `fast`, 3 test legs) |'
ROWS = {'truth (the data set\'s DRRs)': 'truth', 'independent (one draw)': 'independent',
        'consistent (one draw)': 'consistent', 'independent, mean of 3 draws':
        'independent_mean', 'consistent, mean of 3 draws': 'consistent_mean'}
COLUMNS = ('consistency_error', 'view_psnr_mean', 'view_mae_mean', 'volume_psnr',
           'bone_dice_3d', 'volume_sharpness', 'seconds_per_leg')


def _over_patients(name: str, key: str) -> tuple[float, float] | None:
  values = [p['sets'][name][key] for p in FAST['per_patient'].values()]
  if any(v is None for v in values):
    return None
  return float(np.mean(values)), float(np.std(values))


def test_the_run_is_the_one_described():
  assert sorted(FAST['per_patient']) == ['phantom_0002', 'phantom_0010', 'phantom_0023']
  assert RESULT['method'] == 'ctm' and RESULT['condition'] == 'contour_bone'
  assert RESULT['seeds']['draws'] == 3 and FAST['nfe'] == 49
  assert RESULT['data']['version'] == '2.0.0' and RESULT['grid']['n'] == 64
  assert RESULT['machine']['cpu'] in RESULTS_MD


@pytest.mark.parametrize('label', sorted(ROWS))
def test_table_cells_match_the_per_patient_records(label):
  rows = table_rows(RESULTS_MD, HEADER)
  assert set(rows) == set(ROWS)
  for key, cell in zip(COLUMNS, rows[label], strict=True):
    expected = _over_patients(ROWS[label], key)
    if expected is None:
      assert cell == '', (label, key)
      continue
    mean, std = mean_std(cell)
    assert mean == pytest.approx(rounded(expected[0], cell.split('±')[0].strip()), abs=1e-9)
    assert std == pytest.approx(rounded(expected[1], cell.split('±')[1].strip()), abs=1e-9)


def test_every_goal_is_met_as_the_text_says():
  # Recomputed from the per-patient means: the text claims all seven.
  m = {name: {k: _over_patients(name, k) for k in COLUMNS} for name in ROWS.values()}
  consistent, independent = m['consistent'], m['independent']
  assert consistent['consistency_error'][0] <= 0.2 * independent['consistency_error'][0]
  assert consistent['consistency_error'][0] <= 2 * m['truth']['consistency_error'][0]
  for key in ('view_psnr_mean', 'volume_psnr', 'bone_dice_3d'):
    assert consistent[key][0] >= independent[key][0], key
  assert consistent['seconds_per_leg'][0] <= 3 * independent['seconds_per_leg'][0]
  assert consistent['seconds_per_leg'][0] <= 600
  assert all(g['met'] for g in FAST['goals'])
  assert '**Every goal is met.**' in RESULTS_MD


def test_readme_summary_quotes_the_result():
  section = README.split('## Whole legs')[1].split('\n## ')[0]
  ce = {name: _over_patients(name, 'consistency_error')[0]
        for name in ('truth', 'independent', 'consistent')}
  dice = {name: _over_patients(name, 'bone_dice_3d')[0] for name in ('independent', 'consistent')}
  seconds = {name: _over_patients(name, 'seconds_per_leg')[0]
             for name in ('independent', 'consistent')}
  quoted = [float(x) for x in re.findall(r'\d+\.\d+', section)]
  for value, decimals in ((ce['consistent'], 4), (ce['truth'], 4), (ce['independent'], 4),
                          (dice['consistent'], 2), (dice['independent'], 2),
                          (seconds['consistent'] / seconds['independent'], 2)):
    assert round(value, decimals) in quoted, value
  assert f'{seconds["consistent"]:.0f} s per leg' in section


def test_the_paper_sampler_paragraph_quotes_its_result():
  paper = load_result('multiview_paper_cpu.json')['samplers']['paper']
  (leg,) = paper['per_patient'].values()
  s = leg['sets']
  text = ' '.join(RESULTS_MD.split('**With the paper\'s sampler**')[1].split('\n\n')[0].split())
  for value, fmt in ((s['consistent']['consistency_error'], '{:.4f}'),
                     (s['independent']['consistency_error'], '{:.4f}'),
                     (s['truth']['consistency_error'], '{:.5f}'),
                     (s['consistent']['view_psnr_mean'], '{:.2f} against'),
                     (s['independent']['volume_psnr'], '{:.2f} dB'),
                     (s['consistent']['bone_dice_3d'], '{:.3f}'),
                     (s['independent']['volume_sharpness'], '{:.2f}'),
                     (s['consistent']['seconds_per_leg'], '{:.0f} s')):
    assert fmt.format(value) in text, fmt.format(value)
  ratio = s['independent']['consistency_error'] / s['consistent']['consistency_error']
  assert f'{ratio:.1f} times lower, not 5' in text
  assert [g['met'] for g in paper['goals']].count(False) == 3 and 'three goals' in text
