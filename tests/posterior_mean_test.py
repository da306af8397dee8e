"""experiments.posterior_mean and its plots: the average-of-k curve, the spread, summaries,
--step and --split (both it and benchmarks.sampler_curve draw from a kept checkpoint)."""
import json
import math
import os

import jax
import numpy as np
import pytest

from benchmarks import sampler_curve
from configs import ctm
from configs import unet
from experiments import posterior_mean
from experiments import posterior_plots
from helpers import TINY
from helpers import read_split
from helpers import make_workdir
from score_sde_knee import evaluate
from score_sde_knee.utils import files
from score_sde_knee import run_config
from score_sde_knee import sampler_setting


def test_average_curve_matches_analytic_psnr():
  # Truth 0.5 everywhere; draw 1 is off by +d, draw 2 by -d/2: the mean of both is off by
  # d/4, so PSNR(k=1) = -10 log10(d^2) and PSNR(k=2) = -10 log10(d^2 / 16).
  d = 0.1
  truth = np.full((3, 8, 8, 1), 0.5)
  samples = np.stack([truth + d, truth - d / 2])
  got = posterior_mean.average_curve(samples, truth)
  assert got['k'] == [1, 2]
  np.testing.assert_allclose(got['psnr'], [-10 * math.log10(d**2),
                                           -10 * math.log10(d**2 / 16)], rtol=1e-9)
  np.testing.assert_allclose(got['mae'], [d, d / 4], rtol=1e-9)


def test_spread_of_calibrated_gaussian_draws():
  # Truth and 6 draws independent from one posterior N(mu, 0.1^2) per pixel: the single
  # draw's MSE is 2 * 0.01 and the draws' variance 0.01, so calibration is about 1.
  rng = np.random.default_rng(0)
  mu = rng.uniform(0.3, 0.7, (4, 32, 32, 1))
  truth = mu + 0.1 * rng.standard_normal(mu.shape)
  draws = mu[None] + 0.1 * rng.standard_normal((6,) + mu.shape)
  got = posterior_mean.spread(draws, truth)
  assert got['mse_single'] == pytest.approx(0.02, rel=0.03)
  assert got['var_draws'] == pytest.approx(0.01, rel=0.03)
  assert got['calibration'] == pytest.approx(1.0, rel=0.05)
  # Draws sharing a bias of 0.1 are no longer calibrated: (0.02 + 0.01) / 0.02 = 1.5.
  assert posterior_mean.spread(draws + 0.1, truth)['calibration'] == pytest.approx(1.5,
                                                                                   rel=0.05)
  # The average of k such draws gains 10 log10(2k / (k + 1)) dB over one draw.
  curve = posterior_mean.average_curve(draws, truth)
  for k, psnr in zip(curve['k'], curve['psnr']):
    assert psnr - curve['psnr'][0] == pytest.approx(posterior_mean.ideal_gain_db(k),
                                                    abs=0.15)
  with pytest.raises(ValueError, match='at least 2 draws'):
    posterior_mean.spread(draws[:1], truth)
  # Draws that agree exactly (a U-Net's): no spread, so no calibration (None, not inf).
  same = posterior_mean.spread(np.stack([truth + 0.1] * 3), truth)
  assert same['var_draws'] == pytest.approx(0, abs=1e-20) and same['calibration'] is None
  assert same['mse_single'] == pytest.approx(0.01)


def test_summarize_orders_settings_by_nfe_with_seed_statistics(tmp_path):
  wd = str(tmp_path / 'run')
  run_config.save(ctm.get_config('contour_bone,cpu'), wd)
  paths = []
  others = {'pc:500': {'mae': [0.02, 0.03, 0.025, 0.021], 'ssim': [0.9] * 4,
                       'dice_bone': [0.8, 0.7, 0.8, 0.7]},
            'pc:100:snr=0.8': {'mae': [0.02] * 3, 'dice_bone': [0.8, None, 0.8]}}
  for setting, psnr, spread in (('pc:500', [31.0, 31.7, 32.5, 32.3], {'var_draws': 4e-4}),
                                ('pc:25:pred=ancestral,nc=2', [30.4, 29.7], {}),
                                ('pc:100:snr=0.8', [31.2, 31.3, 32.0], {'var_draws': 3e-4})):
    paths.append(str(tmp_path / f'{len(paths)}.json'))
    r = {'workdir': wd, 'setting': setting, 'method': 'ctm', 'condition': 'contour_bone',
         'n_images': 16, 'single_sample_psnr_per_seed': psnr, 'spread': spread}
    if setting in others:  # The second file predates the other metrics.
      r['single_sample_means_per_seed'] = others[setting]
    files.write_json(paths[-1], r)
  png = str(tmp_path / 'seeds.png')
  rows = posterior_mean.summarize(paths)
  posterior_plots.plot_summary(rows, png)
  # NFE = N + (N - 1) n_corrector (predictor first): 25 + 24 * 2, 100 + 99, 500 + 499.
  assert [(r['setting'], r['nfe']) for r in rows] == [
      ('pc:25:pred=ancestral,nc=2', 73), ('pc:100:snr=0.8', 199), ('pc:500', 999)]
  ref = rows[-1]
  assert ref['psnr_mean'] == pytest.approx(31.875)
  assert ref['psnr_std'] == pytest.approx(np.std([31.0, 31.7, 32.5, 32.3], ddof=1))
  assert ref['psnr_sem'] == pytest.approx(ref['psnr_std'] / 2)
  assert [r['draw_variance'] for r in rows] == [None, 3e-4, 4e-4]
  assert ref['mae_mean'] == pytest.approx(0.024) and ref['dice_bone_mean'] == pytest.approx(0.75)
  assert ref['ssim_mean'] == pytest.approx(0.9)
  assert [rows[1]['mae_mean'], rows[1]['ssim_mean'], rows[1]['dice_bone_mean']] == [
      pytest.approx(0.02), None, None]  # Missing, or missing for one seed: no mean.
  assert rows[0]['mae_mean'] is None
  assert not any('gap_paired_mean' in r for r in rows)  # no seeds recorded: nothing to pair
  assert os.path.getsize(png) > 1000
  # A file that stores its NFE is summarized without its workdir (lost runs keep summaries):
  # its stored 49, not the 33 (17 + 16) that pc:17 costs under the cpu preset.
  paths.append(str(tmp_path / 'stored.json'))
  files.write_json(paths[-1], {'workdir': str(tmp_path / 'gone'), 'setting': 'pc:17', 'nfe': 49,
                               'method': 'ctm', 'condition': 'contour_bone', 'n_images': 16,
                               'single_sample_psnr_per_seed': [31.0, 31.5], 'spread': {}})
  assert [r['nfe'] for r in posterior_mean.summarize(paths)] == [49, 73, 199, 999]


def test_summary_plot_draws_the_reference_inside_its_axis(tmp_path):
  rows = [{'setting': s, 'nfe': 999, 'method': 'ctm', 'condition': 'contour', 'n_images': 30,
           'split': 'test', 'seeds': 4, 'psnr_mean': m, 'psnr_sem': 0.2}
          for s, m in (('pc:500', 28.3), ('pc:500:snr=0', 26.7))]
  label, psnr = posterior_mean.parse_reference_psnr('U-Net, 4 runs=30.54')
  assert (label, psnr) == ('U-Net, 4 runs', 30.54)
  fig = posterior_plots.plot_summary(rows, str(tmp_path / 's.png'), (label, psnr))
  ax, = fig.axes
  lo, hi = ax.get_xlim()
  assert lo < 26.5 and hi > 30.54  # the reference is 2.2 dB beyond the rows: still shown
  assert [tuple(line.get_xdata()) for line in ax.lines if line.get_linestyle() == '--'] == [
      (30.54, 30.54)]
  assert 'dashed: U-Net, 4 runs (30.54 dB)' in ax.get_title()
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  canvas = FigureCanvasAgg(fig)  # save_figure closed the figure's own canvas
  canvas.draw()
  box = ax.title.get_window_extent(canvas.get_renderer())
  assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1  # three title lines, none clipped
  with pytest.raises(ValueError, match="'U-Net=high'.*LABEL=PSNR"):
    posterior_mean.parse_reference_psnr('U-Net=high')


def test_summarize_pairs_gaps_on_shared_seeds_only(tmp_path):
  wd = str(tmp_path / 'run')
  run_config.save(ctm.get_config('contour,cpu'), wd)
  ref = [29.64, 30.12, 30.03, 29.39]
  fast = [29.44, 30.29, 29.10, 29.38]
  paths = []
  for setting, psnr, seeds, step in (('pc:500', ref, [43, 44, 45, 46], 8000),
                                     ('pc:25:pred=ancestral', fast, [43, 44, 45, 46], 8000),
                                     ('pc:50:pred=ancestral', fast, [44, 45, 46, 47], 8000),
                                     ('pc:100:pred=ancestral', fast, [43, 44, 45, 46], 4000)):
    paths.append(str(tmp_path / f'{len(paths)}.json'))
    files.write_json(paths[-1], {'workdir': wd, 'setting': setting, 'method': 'ctm',
                                 'condition': 'contour', 'n_images': 30, 'seeds': seeds,
                                 'checkpoint_step': step, 'spread': None,
                                 'single_sample_psnr_per_seed': psnr})
  rows = {r['setting']: r for r in posterior_mean.summarize(paths)}
  got = rows['pc:25:pred=ancestral']
  assert got['split'] == 'test'  # files written before 'split' was recorded: the test split
  diffs = [f - r for f, r in zip(fast, ref)]  # -0.20, +0.17, -0.93, -0.01
  assert got['gap_paired_mean'] == pytest.approx(sum(diffs) / 4)
  assert got['gap_paired_std'] == pytest.approx(np.std(diffs, ddof=1))
  # Other seeds, or another checkpoint: not paired; the reference is not paired with itself.
  for setting in ('pc:50:pred=ancestral', 'pc:100:pred=ancestral', 'pc:500'):
    assert 'gap_paired_mean' not in rows[setting]
    assert rows[setting]['draw_variance'] is None


def test_step_runs_both_benchmarks_on_a_kept_older_checkpoint(tmp_path, data_dir):
  config = unet.get_config('contour_bone,test')
  config.data.data_dir, config.data.builder_config = data_dir, TINY.name
  config.eval.num_images, config.eval.batch_size = 0, 6
  # Step 2 outputs exactly 0 (zero parameters), step 4 is the initialised network.
  wd = make_workdir(tmp_path / 'unet', config, lambda p: jax.tree.map(lambda x: x * 0, p))
  make_workdir(tmp_path / 'unet', config, step=4)
  x = np.stack([t['image'] for t in read_split(data_dir)]).astype(np.float64)
  zero_psnr = np.mean(-10 * np.log10(np.mean(x**2, axis=(1, 2, 3))))  # a zero image's

  got = posterior_mean.run(wd, 1, 'pc:2', None, str(tmp_path / 'pm'), step=2, first_seed=7)
  assert got['checkpoint_step'] == 2 and got['seeds'] == [7]
  assert got['nfe'] == 1  # a U-Net is one forward pass, whatever the sampler setting
  assert got['single_sample_psnr_mean'] == pytest.approx(zero_psnr, abs=1e-4)
  # A zero image's MAE is the images' mean; its SSIM and bone Dice are kept per seed too.
  per_seed = got['single_sample_means_per_seed']
  assert per_seed['mae'] == [pytest.approx(x.mean(), abs=1e-6)]
  assert len(per_seed['ssim']) == len(per_seed['dice_bone']) == 1
  assert os.path.exists(os.path.join(wd, 'eval_posterior', 'step_2', 'contour_bone', 'pc-2',
                                     'seed_7', 'metrics.json'))
  first = tmp_path / 'pm' / 'posterior_unet_contour_bone_pc-2_step2.json'
  assert os.path.exists(first)
  assert not os.path.exists(os.path.join(wd, 'eval'))  # no evaluation of its own written
  # A second setting into the same folder gets its own file; the first one's is kept.
  before = first.read_bytes()
  posterior_mean.run(wd, 1, 'pc:3', None, str(tmp_path / 'pm'), step=2, first_seed=7)
  assert os.path.exists(tmp_path / 'pm' / 'posterior_unet_contour_bone_pc-3_step2.json')
  assert first.read_bytes() == before

  # Another split: its own folders and file, the zero image scored on that split's images.
  v = np.stack([t['image'] for t in read_split(data_dir, 'validation')]).astype(np.float64)
  got = posterior_mean.run(wd, 1, 'pc:2', None, str(tmp_path / 'pm'), step=2, first_seed=7,
                           split='validation')
  assert got['split'] == 'validation' and got['n_images'] == len(v)
  assert got['single_sample_psnr_mean'] == pytest.approx(
      np.mean(-10 * np.log10(np.mean(v**2, axis=(1, 2, 3)))), abs=1e-4)
  assert abs(got['single_sample_psnr_mean'] - zero_psnr) > 1e-3  # other images indeed
  assert os.path.exists(os.path.join(wd, 'eval_posterior_validation', 'step_2',
                                     'contour_bone', 'pc-2', 'seed_7', 'metrics.json'))
  assert os.path.exists(tmp_path / 'pm' / 'posterior_unet_contour_bone_pc-2_step2_validation.json')
  with pytest.raises(ValueError, match='this run is a U-Net'):  # `fast` names no U-Net setting
    posterior_mean.run(wd, 1, 'fast', None, str(tmp_path / 'pm'), step=2)
  with pytest.raises(ValueError, match="--reference is a run's own evaluation of 'test'"):
    posterior_mean.run(wd, 1, 'pc:2', wd, str(tmp_path / 'pm'), step=2, split='validation')

  with pytest.raises(FileNotFoundError, match=r'step_2.*--condition=contour_bone --step=2 '):
    sampler_curve.run([wd], ['pc:2'], str(tmp_path / 'curve'), grid_images=0, step=2)
  evaluate.evaluate(config, wd, step=2)  # the reference: main.py --mode=eval --step=2
  curve = sampler_curve.run([wd], ['pc:2'], str(tmp_path / 'curve'), grid_images=0, step=2)
  ref, fast = curve['rows']
  assert curve['checkpoint_step'] == 2 and ref['seconds'] is None
  assert fast['psnr'] == pytest.approx(zero_psnr, abs=1e-4) and fast['psnr_gap_db'] == 0
  with open(os.path.join(wd, 'eval_samplers', 'step_2', 'contour_bone', 'pc-2',
                         'metrics.json'), encoding='utf-8') as f:
    assert json.load(f)['checkpoint_step'] == 2


def test_fast_names_the_methods_setting_in_both_benchmarks(tmp_path, data_dir, monkeypatch):
  # Cheap stand-ins, one per method, so that the test shows which one was taken.
  monkeypatch.setattr(sampler_setting, 'FAST', {'ctm': 'pc:2:snr=0.3', 'csm': 'pc:3'})
  config = ctm.get_config('contour_bone,test')
  config.data.data_dir, config.data.builder_config = data_dir, TINY.name
  config.eval.num_images, config.eval.batch_size = 2, 2
  wd = make_workdir(tmp_path / 'ctm', config)

  got = posterior_mean.run(wd, 1, 'fast', None, str(tmp_path / 'pm'))
  assert got['setting'] == 'pc:2:snr=0.3' and got['nfe'] == 3  # 2 predictor + 1 corrector
  assert os.path.exists(tmp_path / 'pm' / 'posterior_ctm_contour_bone_pc-2-snr0.3.json')

  evaluate.evaluate(config, wd)  # sampler_curve's reference
  curve = sampler_curve.run([wd], ['fast', 'pc:3'], str(tmp_path / 'curve'), grid_images=0)
  assert [r['setting'] for r in curve['rows']] == ['pc:4 (reference)', 'pc:2:snr=0.3',
                                                    'pc:3']
  assert os.path.exists(os.path.join(wd, 'eval_samplers', 'contour_bone', 'pc-2-snr0.3',
                                     'metrics.json'))


def test_spread_plot_puts_each_setting_at_its_spread_and_psnr(tmp_path, monkeypatch):
  monkeypatch.setattr(sampler_setting, 'FAST', {'csm': 'pc:17:nc=2,mom=0.8'})
  rows = [{'setting': s, 'nfe': nfe, 'method': 'csm', 'condition': c, 'n_images': 30,
           'psnr_mean': m, 'psnr_sem': 0.1, 'draw_variance': v}
          for c in ('contour_bone', 'contour')
          for s, nfe, m, v in (('pc:500', 999, 21.1, 30e-4),
                               ('pc:17:nc=2,mom=0.8', 49, 22.4, 22e-4),
                               ('pc:17:nc=2,mom=0.8,t0=0.5', 49, 20.7, 53e-4),
                               ('pc:25', 49, 19.0, None))]
  fig = posterior_plots.plot_spread(rows, str(tmp_path / 'spread.png'))
  panels = [ax for ax in fig.axes if ax.get_title()]
  assert [ax.get_title() for ax in panels] == ['CSM · contour_bone, 30 images',
                                               'CSM · contour, 30 images']
  for ax in panels:
    points = sorted((round(float(line.get_xdata()[0]), 6),
                     round(float(line.get_ydata()[0]), 6), line.get_marker())
                    for line in ax.lines if line.get_marker() in ('o', 's'))
    # The row without a spread is left out; N = 500 is the square.
    assert points == [(22.0, 22.4, 'o'), (30.0, 21.1, 's'), (53.0, 20.7, 'o')]
    assert sorted(t.get_text() for t in ax.texts) == ['1', '2', '3']
  key, = [ax for ax in fig.axes if not ax.get_title()]
  assert key.texts[0].get_text().splitlines()[:3] == [
      ' 1  pc:500  (999 NFE)', ' 2  pc:17:nc=2,mom=0.8  (49 NFE)  = --sampler=fast',
      ' 3  pc:17:nc=2,mom=0.8,t0=0.5  (49 NFE)']
  assert os.path.getsize(tmp_path / 'spread.png') > 1000
  with pytest.raises(ValueError, match='spread'):
    posterior_plots.plot_spread(rows[3:4], str(tmp_path / 'none.png'))


def test_error_by_region_is_the_mean_offset_in_each_mask_level():
  rng = np.random.default_rng(0)
  mask = np.zeros((2, 8, 8, 1))
  mask[:, 2:6, 2:6] = 0.5
  mask[:, 3:5, 3:5] = 1.0
  truth = rng.uniform(size=mask.shape)
  offset = np.where(mask == 1.0, 0.2, np.where(mask == 0.5, -0.1, 0.03))
  noise = rng.normal(size=(3,) + mask.shape) * 0.05
  noise -= noise.mean(axis=0)  # zero over draws: the mean error is exactly the offset
  got = posterior_mean.error_by_region(truth[None] + offset + noise, truth, mask)
  assert got == pytest.approx({'bone': 0.2, 'soft_tissue': -0.1, 'air': 0.03}, abs=1e-12)
  no_bone = np.minimum(mask, 0.5)
  assert posterior_mean.error_by_region(truth[None] + offset, truth, no_bone)['bone'] is None
