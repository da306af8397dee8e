"""benchmarks/RESULTS.md tables against the result files they quote.

Each figure is recomputed here with numpy from the per-seed values in the JSON files, not
taken from the summary the benchmark printed, so a slip in copying or in the summary shows.
"""
import json

import numpy as np
import pytest

from experiments import plot_ctm_contour_runs as plot_runs
from helpers import load_result as _load, mean_std, read, rounded as _rounded, table_rows
from score_sde_knee import sampler_setting

RESULTS_MD = read('benchmarks', 'RESULTS.md')


SNR_ROWS = {  # RESULTS row label -> file
    'snr 0 (no corrector)': 'posterior_ctm_contour_sigma128_2000_pc500_snr0_cpu.json',
    'snr 0.16': 'posterior_ctm_contour_sigma128_2000_pc500_snr0.16_cpu.json',
    'snr 0.4 (paper)': 'posterior_ctm_contour_sigma128_2000_pc500_cpu.json',
    'snr 0.8': 'posterior_ctm_contour_sigma128_2000_pc500_snr0.8_cpu.json',
}


@pytest.mark.parametrize('label', sorted(SNR_ROWS))
def test_snr_table_matches_its_result_files(label):
  rows = table_rows(RESULTS_MD, '| CTM contour, sigma_max 128, step 2000, 30 test images |')
  assert set(SNR_ROWS) <= set(rows)
  nfe, per_seed, mean_cell, gap, mae, ssim, avg4, var_mse, calib = rows[label]
  d, ref = _load(SNR_ROWS[label]), _load(SNR_ROWS['snr 0.4 (paper)'])
  assert d['seeds'] == ref['seeds'] == [42, 43, 44, 45]
  assert d['n_images'] == 30 and d['checkpoint_step'] == 2000
  assert d['workdir'] == ref['workdir']  # the same model for every row
  snr = label.split()[1]
  assert d['setting'] == ('pc:500' if snr == '0.4' else f'pc:500:snr={snr}')
  assert int(nfe) == d['nfe']

  psnr = np.asarray(d['single_sample_psnr_per_seed'], np.float64)
  quoted = [float(x) for x in per_seed.split('/')]
  np.testing.assert_array_equal(quoted, np.round(psnr, 2))
  m, s = mean_std(mean_cell)
  assert (m, s) == (round(psnr.mean(), 2), round(psnr.std(ddof=1), 2))
  if gap:  # paired with the snr 0.4 draw of the same seed
    diff = psnr - np.asarray(ref['single_sample_psnr_per_seed'])
    g, gs = mean_std(gap)
    assert (g, gs) == (round(diff.mean(), 2), round(diff.std(ddof=1), 2))
  else:
    assert label.startswith('snr 0.4')
  per_seed_means = d['single_sample_means_per_seed']
  assert float(mae) == _rounded(np.mean(per_seed_means['mae']), mae)
  assert float(ssim) == _rounded(np.mean(per_seed_means['ssim']), ssim)
  k = d['average_of_k']['k'].index(4)
  assert float(avg4) == _rounded(d['average_of_k']['psnr'][k], avg4)
  var, mse = (float(x) for x in var_mse.split('/'))
  assert var == _rounded(d['spread']['var_draws'] * 1e4, var_mse.split('/')[0].strip())
  assert mse == _rounded(d['spread']['mse_single'] * 1e4, var_mse.split('/')[1].strip())
  # The file's mean over images of each image's ratio (not a ratio of the two means above).
  assert float(calib) == _rounded(d['spread']['calibration'], calib)


def test_snr_table_unet_row_is_the_unet_runs():
  rows = table_rows(RESULTS_MD, '| CTM contour, sigma_max 128, step 2000, 30 test images |')
  cells = rows['U-Net contour, three runs']
  m, s = mean_std(cells[2])
  psnr = np.asarray(plot_runs.collect()['unet_psnr'])  # the runs with a result file
  assert len(psnr) == 3
  assert (m, s) == (round(psnr.mean(), 2), round(psnr.std(ddof=1), 2))


def test_data_version_demo_table_matches_its_result_file():
  rows = table_rows(RESULTS_MD, '| seed | knee_drr 1.0.0 | knee_drr 1.1.0 | 1.1.0 - 1.0.0 |')
  runs = _load('demo_data_versions_epyc_cpu.json')['runs']
  psnr = {(r['seed'], r['data'].split(':')[1]): r for r in runs}
  assert len(psnr) == 6 and {r['n'] for r in runs} == {30}
  old, new = [], []
  for seed in (42, 43, 44):
    label = next(k for k in rows if k.split()[0] == str(seed))
    a, b = psnr[(seed, '1.0.0')], psnr[(seed, '1.1.0')]
    cells = rows[label]
    assert mean_std(cells[0]) == (round(a['psnr_mean'], 2), round(a['psnr_std'], 2))
    assert mean_std(cells[1]) == (round(b['psnr_mean'], 2), round(b['psnr_std'], 2))
    # The difference of the rounded cells, as a reader would check it.
    assert float(cells[2]) == pytest.approx(round(b['psnr_mean'], 2) - round(a['psnr_mean'], 2))
    old.append(a['psnr_mean'])
    new.append(b['psnr_mean'])
  summary = rows['mean ± std over seeds']
  for cell, x in zip(summary, (np.array(old), np.array(new), np.subtract(new, old))):
    assert mean_std(cell) == (round(x.mean(), 2), round(x.std(ddof=1), 2)), cell


@pytest.mark.parametrize('version, header, file', [
    ('1.1.0', '| method (knee_drr 1.1.0) | contour MAE |', 'table1_v1.1.0_cpu.json'),
    ('2.0.0', '| method (knee_drr 2.0.0, `fast`) | contour MAE |',
     'table1_v2.0.0_fast_cpu.json'),
])
def test_table_one_matches_its_result_file(version, header, file):
  """Table I on each knee_drr version: each cell from the per-image values (std ddof=0,
  as report.py), a blank cell exactly where no model was evaluated."""
  rows = table_rows(RESULTS_MD, header)
  result = _load(file)
  got = {(r['metrics']['method'], r['metrics']['condition']): r['metrics']
         for r in result['runs'] if 'metrics' in r}
  assert {r['metrics']['data'] for r in result['runs'] if 'metrics' in r} == {
      f'knee_drr/phantom_64:{version}'}
  assert all(r['rc'] == 0 for r in result['runs'])
  assert set(rows) == {"U-Net", "CSM", "CTM"} and len(got) == 6
  for method, name in (('unet', 'U-Net'), ('csm', 'CSM'), ('ctm', 'CTM')):
    cells = rows[name]
    for j, condition in enumerate(('contour', 'contour_bone')):
      mae_cell, psnr_cell = cells[2 * j], cells[2 * j + 1]
      metrics = got.get((method, condition))
      if metrics is None:
        assert mae_cell == psnr_cell == '—', (name, condition)
        continue
      assert metrics['checkpoint_step'] == 2000 and metrics['view_stride'] == 6
      for cell, key in ((mae_cell, 'mae'), (psnr_cell, 'psnr')):
        x = np.array([p[key] for p in metrics['per_image']])
        mean, std = (t.strip() for t in cell.split('±'))
        assert (float(mean), float(std)) == (_rounded(x.mean(), mean),
                                             _rounded(x.std(), std)), (name, condition, key)


def _check_draws_row(cells: list[str], d: dict, ref_psnr: np.ndarray, is_ref: bool,
                     condition: str) -> None:
  """The cells NFE | PSNR per seed | mean ± std | gap | MAE | SSIM | bone Dice | spread of a
  posterior_mean result file `d`, against the PC N = 500 draws ref_psnr: each recomputed."""
  nfe, per_seed, mean_cell, gap, mae, ssim, dice, spread = cells
  assert int(nfe) == d['nfe']
  psnr = np.asarray(d['single_sample_psnr_per_seed'], np.float64)
  np.testing.assert_array_equal([float(x) for x in per_seed.split('/')], np.round(psnr, 2))
  if len(psnr) > 1:
    assert mean_std(mean_cell) == (round(psnr.mean(), 2), round(psnr.std(ddof=1), 2))
  else:
    assert float(mean_cell) == round(psnr.mean(), 2)
  if is_ref:
    assert gap == ''
  elif len(ref_psnr) > 1:  # +- the standard error of the difference of the two means
    se = np.sqrt(psnr.var(ddof=1) / len(psnr) + ref_psnr.var(ddof=1) / len(ref_psnr))
    assert mean_std(gap) == (round(psnr.mean() - ref_psnr.mean(), 2), round(se, 2))
  else:
    assert float(gap) == round(psnr.mean() - ref_psnr.mean(), 2)
  means = d['single_sample_means_per_seed']
  assert float(mae) == _rounded(np.mean(means['mae']), mae)
  assert float(ssim) == _rounded(np.mean(means['ssim']), ssim)
  if condition == 'contour_bone':
    assert float(dice) == _rounded(np.mean(means['dice_bone']), dice)
  else:
    assert dice == ''
  if d['spread'] is None:  # one draw
    assert spread == '' and len(psnr) == 1
  else:
    assert float(spread) == _rounded(d['spread']['var_draws'] * 1e4, spread)


FAST_MODELS = [('ctm', 'contour_bone'), ('csm', 'contour'), ('csm', 'contour_bone'),
               ('ctm', 'contour')]


@pytest.mark.parametrize('method, condition', FAST_MODELS)
def test_fast_sampler_on_data_version_1_1_0_matches_its_result_files(method, condition):
  """--sampler=fast against PC N = 500 on the 1.1.0 Table I models (rerun bit for bit)."""
  rows = table_rows(RESULTS_MD, '| model (knee_drr 1.1.0, step 2000), sampler | NFE |')
  name = f"{method.upper()} {condition.replace('_', '+')}"
  ref = _load(f'posterior_v1.1.0_table1_{method}_{condition}_pc500_cpu.json')
  fast = _load(f'posterior_v1.1.0_table1_{method}_{condition}_fast_cpu.json')
  assert (ref['setting'], fast['setting']) == ('pc:500', sampler_setting.FAST[method])
  assert (ref['nfe'], fast['nfe']) == (999, 49)
  assert fast['seeds'] == [42, 43, 44, 45] and ref['seeds'][0] == 42
  for d in (ref, fast):
    assert (d['checkpoint_step'], d['n_images'], d['split'], d['condition']) == (
        2000, 30, 'test', condition)
    assert d['workdir'] == ref['workdir']  # one model per pair
  ref_psnr = np.asarray(ref['single_sample_psnr_per_seed'], np.float64)
  for label, d in ((f'{name}: PC N = 500', ref), (f'{name}: `fast`', fast)):
    _check_draws_row(rows[label][:8], d, ref_psnr, d is ref, condition)


# The CSM ablation table: row label -> (condition, file name part, setting); the settings
# are checked against what each label says. Its N = 500 rows have two seeds.
CSM_ABLATION_ROWS = {
    'contour+bone: PC N = 500 (paper)': ('contour_bone', 'pc500_2seeds', 'pc:500'),
    'contour+bone: PC N = 500 + preconditioner': ('contour_bone', 'pc500pre_2seeds',
                                                  'pc:500:pre=2.5,prew=4'),
    'contour+bone: `fast`': ('contour_bone', 'fast', None),
    'contour+bone: `fast` as pc:13, nc 3': ('contour_bone', 'nc3', None),
    'contour+bone: `fast`, snr 0.5': ('contour_bone', 'snr05', None),
    'contour+bone: `fast`, t0 0.45': ('contour_bone', 't045', None),
    'contour+bone: `fast`, t0 0.5': ('contour_bone', 't05', None),
    'contour+bone: `fast` without preconditioner': ('contour_bone', 'mom', None),
    'contour+bone: `fast` without preconditioner or momentum': ('contour_bone', 'plain', None),
    'contour: PC N = 500 (paper)': ('contour', 'pc500_2seeds', 'pc:500'),
    'contour: `fast`': ('contour', 'fast', None),
    'contour: `fast` as pc:13, nc 3': ('contour', 'nc3', None),
    'contour: `fast`, snr 0.5': ('contour', 'snr05', None),
    'contour: `fast`, t0 0.45': ('contour', 't045', None),
    'contour: `fast`, t0 0.5': ('contour', 't05', None),
}


def _fast_variant(name: str) -> str:
  """The `fast` CSM string with the one change an ablation row label names."""
  fast = sampler_setting.FAST['csm']
  return {'fast': fast, 'nc3': fast.replace('pc:17:', 'pc:13:').replace('nc=2', 'nc=3'),
          'snr05': fast.replace('snr=0.4', 'snr=0.5'), 't045': fast + ',t0=0.45',
          't05': fast + ',t0=0.5', 'mom': fast.replace(',pre=2.5,prew=4', ''),
          'plain': fast.replace(',pre=2.5,prew=4', '').replace(',mom=0.8', '')}[name]


@pytest.mark.parametrize('label', list(CSM_ABLATION_ROWS))
def test_csm_fast_bias_table_matches_its_result_files(label):
  """Every cell of the row recomputed from its file (one CSM model)."""
  rows = table_rows(RESULTS_MD, '| CSM (knee_drr 1.1.0, step 2000, Xeon host), condition')
  assert set(rows) == set(CSM_ABLATION_ROWS)
  condition, name, setting = CSM_ABLATION_ROWS[label]
  d = _load(f'posterior_v1.1.0_xeon_csm_{condition}_{name}_cpu.json')
  ref = _load(f'posterior_v1.1.0_xeon_csm_{condition}_pc500_2seeds_cpu.json')
  assert d['setting'] == (setting or _fast_variant(name))
  assert (d['method'], d['condition'], d['checkpoint_step'], d['n_images'], d['split']) == (
      'csm', condition, 2000, 30, 'test')
  assert d['workdir'] == ref['workdir']  # one model
  assert d['seeds'] == ([42, 43] if name.startswith('pc500') else [42, 43, 44, 45])
  assert d['nfe'] == (999 if name.startswith('pc500') else 49)
  _check_draws_row(rows[label][:8], d, np.asarray(ref['single_sample_psnr_per_seed']),
                   name == 'pc500_2seeds', condition)
  errors = rows[label][8]
  region = d['mean_error_by_region']
  assert [float(x) for x in errors.split('/')] == [
      _rounded(region[k], '0.000') for k in ('bone', 'soft_tissue', 'air')]


# The four-seed CSM table: RESULTS row label -> (condition, file name part).
CSM_FOUR_SEED_ROWS = {
    'contour+bone: PC N = 500 (paper)': ('contour_bone', 'pc500'),
    'contour+bone: PC N = 500 + preconditioner': ('contour_bone', 'pc500pre'),
    'contour+bone: `fast`': ('contour_bone', 'fast'),
    'contour: PC N = 500 (paper)': ('contour', 'pc500'),
    'contour: PC N = 500 + preconditioner': ('contour', 'pc500pre'),
    'contour: `fast`': ('contour', 'fast'),
}


@pytest.mark.parametrize('label', list(CSM_FOUR_SEED_ROWS))
def test_csm_four_seed_table_matches_its_result_files(label):
  """Every cell, the paired gap from the per-seed PSNR of both files."""
  rows = table_rows(RESULTS_MD, '| CSM (knee_drr 1.1.0, step 2000, Xeon host, seeds 42-45)')
  assert set(rows) == set(CSM_FOUR_SEED_ROWS)
  condition, name = CSM_FOUR_SEED_ROWS[label]
  d = _load(f'posterior_v1.1.0_xeon_csm_{condition}_{name}_cpu.json')
  ref = _load(f'posterior_v1.1.0_xeon_csm_{condition}_pc500_cpu.json')
  assert (d['workdir'], d['condition'], d['seeds']) == (ref['workdir'], condition,
                                                        [42, 43, 44, 45])
  nfe, per_seed, mean_cell, gap, spread, calibration, errors = rows[label]
  assert int(nfe) == d['nfe']
  psnr = np.asarray(d['single_sample_psnr_per_seed'], np.float64)
  np.testing.assert_array_equal([float(x) for x in per_seed.split('/')], np.round(psnr, 2))
  assert mean_std(mean_cell) == (round(psnr.mean(), 2), round(psnr.std(ddof=1), 2))
  diff = psnr - np.asarray(ref['single_sample_psnr_per_seed'], np.float64)
  if d['setting'] == 'pc:500':
    assert gap == ''
  else:
    assert mean_std(gap) == (round(diff.mean(), 2), round(diff.std(ddof=1), 2))
  s = d['spread']
  assert float(spread) == _rounded(s['var_draws'] * 1e4, spread)
  assert float(calibration) == _rounded(s['calibration'], calibration)
  region = d['mean_error_by_region']
  assert [float(x) for x in errors.split('/')] == [
      _rounded(region[k], '0.000') for k in ('bone', 'soft_tissue', 'air')]


BIAS_FILES = {'contour+bone': 'bias_maps_v1.1.0_xeon_csm_ctm_contour_bone_cpu.json',
              'contour': 'bias_maps_v1.1.0_xeon_csm_contour_cpu.json'}
BIAS_LABELS = {'pc:500': 'PC N = 500', 'pc:500:pre=2.5,prew=4': 'PC N = 500 + preconditioner'}


def test_distance_to_edge_table_matches_its_result_files():
  """Every cell from experiments.bias_maps' files, whose draws are the posterior_mean
  files' (their region errors agree)."""
  rows = table_rows(RESULTS_MD, '| condition: model, sampler (draws) | air > 3 px |')
  expected = {}
  for condition, name in BIAS_FILES.items():
    for f in _load(name)['files']:
      posterior = json.loads(read(f['path']))
      assert f['error_by_region'] == pytest.approx(posterior['mean_error_by_region'])
      assert f['seeds'] == posterior['seeds']
      method = posterior['method'].upper()
      fast = f['setting'] == sampler_setting.FAST[posterior['method']]
      sampler = '`fast`' if fast else BIAS_LABELS[f['setting']]
      expected[f'{condition}: {method}, {sampler} ({len(f["seeds"])})'] = f
  assert set(rows) == set(expected) | {'pixels (of 122880)', 'truth (mean)'}
  bands = next(iter(expected.values()))['error_by_distance']
  pixels = [b['pixels'] for b in bands]
  assert [int(x) for x in rows['pixels (of 122880)'][:7]] == pixels
  near = sum(pixels[1:5])
  assert rows['pixels (of 122880)'][7] == f'{round(100 * near / 122880)} % of pixels'
  assert [float(x) for x in rows['truth (mean)'][:7]] == [round(b['truth'], 3) for b in bands]
  for label, f in expected.items():
    got = f['error_by_distance']
    assert [b['pixels'] for b in got] == pixels  # one subset, one set of masks
    assert [float(x) for x in rows[label][:7]] == [round(b['error'], 3) for b in got]
    share = sum(b['sq_error_share'] for b in got[1:5])  # within 3 px: air and leg
    assert rows[label][7] == f'{round(100 * share)} %'


def test_contour_only_runs_table_matches_its_result_files():
  """The U-Net runs (std over images in a cell, over runs in the summary row) and the CTM's
  four PC N = 500 draws per checkpoint (std over draws), each from its file."""
  rows = table_rows(RESULTS_MD, '| contour only, knee_drr 1.0.0, 30 test images |')
  unet = {'U-Net seed 42, step 4000': 'eval_unet_contour_4000_cpu.json',
          'U-Net seed 44, step 2000': 'eval_unet_contour_seed44_cpu.json',
          'U-Net seed 45, step 2000': 'eval_unet_contour_seed45_cpu.json'}
  ctm = {(43, 8000): 'posterior_ctm_contour_seed43_8000_pc500_cpu.json',
         (44, 8000): 'posterior_ctm_contour_seed44_8000_pc500_cpu.json',
         (44, 16000): 'posterior_ctm_contour_seed44_16000_pc500_cpu.json'}
  summary = 'U-Net, three runs: mean ± std over runs'
  labels = {f'CTM seed {s}, step {n}, PC N = 500, four draws: mean ± std over draws': (s, n)
            for s, n in ctm}
  assert set(rows) == set(unet) | {summary} | set(labels)
  runs = []
  for label, name in unet.items():
    d = _load(name)
    psnr, mae, ssim, avg = rows[label]
    assert d['method'] == 'unet' and d['condition'] == 'contour' and d['n'] == 30
    assert mean_std(psnr) == (round(d['psnr_mean'], 2), round(d['psnr_std'], 2))
    assert float(mae) == round(d['mae_mean'], 4) and float(ssim) == round(d['ssim_mean'], 3)
    assert avg == ''
    runs.append(d)
  psnr = np.array([d['psnr_mean'] for d in runs])
  assert mean_std(rows[summary][0]) == (round(psnr.mean(), 2), round(psnr.std(ddof=1), 2))
  assert float(rows[summary][1]) == round(np.mean([d['mae_mean'] for d in runs]), 4)
  assert float(rows[summary][2]) == round(np.mean([d['ssim_mean'] for d in runs]), 3)
  assert list(plot_runs.collect()['unet_psnr']) == list(psnr)  # the plot's U-Net band
  for label, (seed, step) in labels.items():
    d = _load(ctm[seed, step])
    assert (d['setting'], d['checkpoint_step'], d['n_images'], d['seeds'][0]) == (
        'pc:500', step, 30, seed)
    draws = np.asarray(d['single_sample_psnr_per_seed'], np.float64)
    assert len(draws) == 4
    psnr, mae, ssim, avg = rows[label]
    assert mean_std(psnr) == (round(draws.mean(), 2), round(draws.std(ddof=1), 2))
    means = d.get('single_sample_means_per_seed')
    if means is None:  # written before per-seed MAE and SSIM were kept
      assert mae == ssim == ''
    else:
      assert float(mae) == round(np.mean(means['mae']), 4)
      assert float(ssim) == round(np.mean(means['ssim']), 3)
    k = d['average_of_k']['k'].index(4)
    assert float(avg) == round(d['average_of_k']['psnr'][k], 2)
