"""benchmarks/RESULTS.md's `fast-air` tables (CSM with the air outside the contour held,
sampling.known_air) against the result files they quote, recomputed with numpy as in
results_md_test."""
import numpy as np
import pytest

from helpers import load_result as _load, mean_std, read, rounded as _rounded, table_rows
from score_sde_knee import sampler_setting

RESULTS_MD = read('benchmarks', 'RESULTS.md')


# CSM with the air outside the contour held (sampling.known_air). The margin was chosen on
# validation images; RESULTS row label -> file name part, per condition.
AIR_VALIDATION_ROWS = {'no air (`fast`)': 'none', '0': '0', '1': '1', '2': '2', '3': '3'}


def _air_setting(base: str, margin: str) -> str:
  """The sampler string of `base` with the air held; margin '' is air=1 without airm."""
  return base + (':' if base.count(':') == 1 else ',') + 'air=1' + (
      f',airm={margin}' if margin else '')


def test_air_margin_validation_table_matches_its_result_files():
  """Every cell from the per-seed PSNR; the gain is paired by seed with `fast` without air."""
  rows = table_rows(RESULTS_MD, '| CSM validation subset (30 images, seeds 42-45), `fast` + air')
  assert set(rows) == set(AIR_VALIDATION_ROWS)
  fast = sampler_setting.FAST['csm']
  for label, margin in AIR_VALIDATION_ROWS.items():
    gains = []
    for i, condition in enumerate(('contour_bone', 'contour')):
      d = _load(f'posterior_v1.1.0_xeon_csm_{condition}_val_fastair{margin}_cpu.json')
      base = _load(f'posterior_v1.1.0_xeon_csm_{condition}_val_fastairnone_cpu.json')
      assert d['setting'] == (fast if margin == 'none' else _air_setting(fast, margin))
      assert (d['split'], d['n_images'], d['seeds'], d['workdir']) == (
          'validation', 30, [42, 43, 44, 45], 'runs/xeon/csm')
      psnr = np.asarray(d['single_sample_psnr_per_seed'], np.float64)
      gain = psnr - np.asarray(base['single_sample_psnr_per_seed'], np.float64)
      cell, gain_cell = rows[label][2 * i:2 * i + 2]
      assert mean_std(cell) == (round(psnr.mean(), 2), round(psnr.std(ddof=1), 2))
      if margin == 'none':
        assert gain_cell == ''
      else:
        assert mean_std(gain_cell) == (round(gain.mean(), 2), round(gain.std(ddof=1), 2))
      gains.append(gain.mean())
    assert rows[label][4] == ('' if margin == 'none' else f'{np.mean(gains):+.2f}')


# RESULTS row label -> (method, condition, sampler file part, margin): margin None is the
# sampler without air, '' air=1 without airm (every pixel outside the contour held).
AIR_TEST_ROWS = {
    'contour+bone: `fast`': ('csm', 'contour_bone', 'fast', None),
    'contour+bone: `fast` + air': ('csm', 'contour_bone', 'fast', ''),
    'contour+bone: `fast` + air, margin 1': ('csm', 'contour_bone', 'fast', '1'),
    'contour+bone: `fast` + air, margin 2': ('csm', 'contour_bone', 'fast', '2'),
    'contour+bone: PC N = 500 (paper)': ('csm', 'contour_bone', 'pc500', None),
    'contour+bone: PC N = 500 + air': ('csm', 'contour_bone', 'pc500', ''),
    'contour+bone: PC N = 500 + air, margin 1': ('csm', 'contour_bone', 'pc500', '1'),
    'contour: `fast`': ('csm', 'contour', 'fast', None),
    'contour: `fast` + air': ('csm', 'contour', 'fast', ''),
    'contour: `fast` + air, margin 1': ('csm', 'contour', 'fast', '1'),
    'contour: `fast` + air, margin 2': ('csm', 'contour', 'fast', '2'),
    'contour: PC N = 500 (paper)': ('csm', 'contour', 'pc500', None),
    'contour: PC N = 500 + air, margin 1': ('csm', 'contour', 'pc500', '1'),
    'contour: PC N = 500 + air, margin 2': ('csm', 'contour', 'pc500', '2'),
    'CTM contour+bone: `fast`': ('ctm', 'contour_bone', 'fast', None),
    'CTM contour+bone: `fast` + air, margin 1': ('ctm', 'contour_bone', 'fast', '1'),
}


def _air_file(method: str, condition: str, sampler: str, margin: str | None) -> str:
  air = '' if margin is None else 'air' if margin == '' else f'airm{margin}'
  return f'posterior_v1.1.0_xeon_{method}_{condition}_{sampler}{air}_cpu.json'


@pytest.mark.parametrize('label', list(AIR_TEST_ROWS))
def test_air_test_table_matches_its_result_files(label):
  """Every cell; the gain is paired by seed with the same sampler without air."""
  rows = table_rows(RESULTS_MD, '| CSM and CTM (knee_drr 1.1.0, step 2000, Xeon host, test')
  assert set(rows) == set(AIR_TEST_ROWS)
  method, condition, sampler, margin = AIR_TEST_ROWS[label]
  d = _load(_air_file(method, condition, sampler, margin))
  base = _load(_air_file(method, condition, sampler, None))
  plain = 'pc:500' if sampler == 'pc500' else sampler_setting.FAST[method]
  assert d['setting'] == (plain if margin is None else _air_setting(plain, margin))
  assert (d['method'], d['condition'], d['split'], d['n_images'], d['checkpoint_step']) == (
      method, condition, 'test', 30, 2000)
  assert (d['workdir'], d['seeds']) == (base['workdir'], [42, 43, 44, 45])
  nfe, per_seed, mean_cell, gain, mae, ssim, dice, calibration, errors = rows[label]
  assert int(nfe) == d['nfe'] == (999 if sampler == 'pc500' else 49)
  psnr = np.asarray(d['single_sample_psnr_per_seed'], np.float64)
  np.testing.assert_array_equal([float(x) for x in per_seed.split('/')], np.round(psnr, 2))
  assert mean_std(mean_cell) == (round(psnr.mean(), 2), round(psnr.std(ddof=1), 2))
  diff = psnr - np.asarray(base['single_sample_psnr_per_seed'], np.float64)
  if margin is None:
    assert gain == ''
  else:
    assert mean_std(gain) == (round(diff.mean(), 2), round(diff.std(ddof=1), 2))
  means = d['single_sample_means_per_seed']
  assert float(mae) == _rounded(np.mean(means['mae']), mae)
  assert float(ssim) == _rounded(np.mean(means['ssim']), ssim)
  assert dice == ('' if condition == 'contour' else f"{np.mean(means['dice_bone']):.3f}")
  assert float(calibration) == _rounded(d['spread']['calibration'], calibration)
  region = d['mean_error_by_region']
  assert [float(x) for x in errors.split('/')] == [
      _rounded(region[k], '0.000') for k in ('bone', 'soft_tissue', 'air')]


AIR_BIAS_FILES = {'contour+bone': 'bias_maps_v1.1.0_xeon_csm_contour_bone_air_cpu.json',
                  'contour': 'bias_maps_v1.1.0_xeon_csm_contour_air_cpu.json'}
AIR_BIAS_SAMPLERS = {'fast': '`fast`', 'pc500': 'PC N = 500'}  # file name part -> label


def test_air_distance_to_edge_table_matches_its_result_files():
  """Every cell from the bias_maps files, whose draws are those of the test table's files
  (same setting, seeds and region errors); the bands and masks are those of the CSM table
  without air."""
  rows = table_rows(RESULTS_MD, '| CSM with the air held, condition: sampler (draws) |')
  plain = _load('bias_maps_v1.1.0_xeon_csm_contour_cpu.json')['files'][0]['error_by_distance']
  expected = {}
  for condition, name in AIR_BIAS_FILES.items():
    for f in _load(name)['files']:
      setting = f['setting']
      sampler = 'pc500' if setting.startswith('pc:500') else 'fast'
      # As in AIR_TEST_ROWS: None without air, '' for air=1 alone (margin 0).
      margin = (None if 'air=1' not in setting else
                setting.split('airm=')[1] if 'airm=' in setting else '')
      posterior_name = _air_file('csm', condition.replace('+', '_'), sampler, margin)
      posterior = _load(posterior_name)
      assert f['path'] == f'benchmarks/results/{posterior_name}'
      assert (f['setting'], f['seeds']) == (posterior['setting'], posterior['seeds'])
      assert f['error_by_region'] == pytest.approx(posterior['mean_error_by_region'])
      air = '' if margin is None else f', air margin {margin or 0}'
      expected[f'{condition}: {AIR_BIAS_SAMPLERS[sampler]}{air} ({len(f["seeds"])})'] = f
  assert set(rows) == set(expected) and len(expected) == 14
  for label, f in expected.items():
    got = f['error_by_distance']
    assert [b['pixels'] for b in got] == [b['pixels'] for b in plain]  # one subset, one mask
    assert [float(x) for x in rows[label][:7]] == [round(b['error'], 3) for b in got]
    near = got[1:5]  # within 3 px: air 2-3, air 1, leg 1, leg 2-3
    share = sum(b['sq_error_share'] for b in near)
    assert rows[label][7] == f'{round(100 * share)} %'
    mse = sum(b['mse'] * b['pixels'] for b in near) / sum(b['pixels'] for b in near)
    assert float(rows[label][8]) == round(1e3 * mse, 1)


def test_ctm_contour_air_table_matches_its_result_files():
  """A CTM on the contour: each cell from the per-seed PSNR, gains paired by seed with `fast`
  without air on the same split."""
  rows = table_rows(RESULTS_MD, '| CTM contour (Xeon run, step 2000, 30 images')
  assert list(rows) == ['no air (`fast`)', '1', '2']
  fast = sampler_setting.FAST['ctm']
  for i, split in enumerate(('validation', 'test')):
    def load(margin, split=split):
      part = {'validation': f'val_fastair{margin or "none"}',
              'test': f'fastairm{margin}' if margin else 'fast'}[split]
      d = _load(f'posterior_v1.1.0_xeon_ctm_contour_{part}_cpu.json')
      assert d['setting'] == (_air_setting(fast, margin) if margin else fast)
      assert (d['split'], d['n_images'], d['seeds'], d['checkpoint_step'], d['method']) == (
          split, 30, [42, 43, 44, 45], 2000, 'ctm')
      return np.asarray(d['single_sample_psnr_per_seed'], np.float64)
    base = load('')
    for label, margin in (('no air (`fast`)', ''), ('1', '1'), ('2', '2')):
      psnr = load(margin)
      cell, gain = rows[label][2 * i:2 * i + 2]
      assert mean_std(cell) == (round(psnr.mean(), 2), round(psnr.std(ddof=1), 2))
      if margin:
        diff = psnr - base
        assert gain == f'{diff.mean():+.2f} ± {diff.std(ddof=1):.2f}'
      else:
        assert gain == ''
