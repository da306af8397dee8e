"""Single samples vs the average of K samples: how much PSNR a sampler loses to spread.

    python -m experiments.posterior_mean --workdir runs/table/ctm_contour --k 8 \
        --setting pc:100 --reference runs/table/unet_contour --out runs/posterior_mean

A diffusion model draws one plausible image per mask; an L1-trained U-Net returns about
the median of what the mask allows. PSNR and MAE reward the centre of the posterior, so
where a mask leaves much of the image open (contour only: the bones), a perfect sampler
scores below a perfect regressor. This script measures that on the run's eval subset
(its saved config.eval): K samples per image with seeds S, S+1, ... (S: --first_seed,
default the run's config seed), the mean PSNR
of single samples, the PSNR of the average of the first k samples (k = 1..K), and the
spread of the draws (`spread`: is a single draw's error all posterior spread?), and the
draws' mean error in the bone, soft tissue and air of the contour+bone mask
(`mean_error_by_region`: does the mask's brightness stay in the draws?). With
--reference, the reference run's own `--mode=eval` metrics are put beside them.

Each seed's batches go to workdir/eval_posterior/<condition>/<setting>/seed_<s>/ through
`evaluate.evaluate(out_dir=...)`, so an interrupted run resumes (`draw_dirs` in the JSON
names them: experiments.bias_maps draws pictures from them). Prints one JSON object and
writes out/posterior_<method>_<condition>_<setting>.json and .png (the setting as a
folder name: pc:17:snr=0.4 -> pc-17-snr0.4). --step=S draws from the kept
checkpoint S instead of the newest (folders eval_posterior/step_S/..., files *_stepS.*).
--split=validation draws on that split's eval subset instead (folders
eval_posterior_validation/..., files *_validation.*): a check, on images no setting was
chosen on, of a sampler tuned on the test subset.
`--summarize A.json B.json ...` puts several such files (settings of one run) in one table
and, per condition, one plot, mean +- standard error over seeds by NFE (with
--reference_psnr, a dashed line at that figure), and PSNR against the draws' spread in
<method>_spread.png.
"""
import argparse
import json
import os
import sys

import numpy as np

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import posterior_plots  # pylint: disable=g-import-not-at-top
from score_sde_knee import evaluate
from score_sde_knee.utils import files
from score_sde_knee import input_pipeline
from score_sde_knee import metrics
from score_sde_knee.utils import progress
from score_sde_knee import report
from score_sde_knee import run_config
from score_sde_knee import sampler_setting
from score_sde_knee.utils import plots
from score_sde_knee.utils import xla_cpu


# evaluate's other per-seed means, kept beside PSNR: a sampler that matches N = 500 in PSNR
# can still differ in structure (SSIM) or in where it puts bone (Dice of the samples'
# bright region against the projected CT bone).
OTHER_METRICS = ('mae', 'ssim', 'dice_bone')


def average_curve(samples: np.ndarray, images: np.ndarray) -> dict[str, list[float]]:
  """PSNR / MAE (mean over images) of the average of the first k samples, k = 1..K.

  samples: (K, n, H, W, 1); images: (n, H, W, 1).
  """
  out = {'k': [], 'psnr': [], 'mae': []}
  for k in range(1, len(samples) + 1):
    avg = samples[:k].mean(axis=0)
    out['k'].append(k)
    out['psnr'].append(float(metrics.psnr(avg, images).mean()))
    out['mae'].append(float(metrics.mae(avg, images).mean()))
  return out


def spread(samples: np.ndarray, images: np.ndarray) -> dict[str, float]:
  """How much of a single sample's error is posterior spread (needs K >= 2 draws).

  If the truth x and the draws x_1..x_K are independent draws of one posterior with
  covariance C, E||x_k - x||^2 = 2 tr C and E||mean_k - x||^2 = (1 + 1/k) tr C: a calibrated
  sampler scores 10 log10(2) = 3.01 dB below the posterior mean, which an MSE-trained
  regressor estimates. Returns the mean over images of: mse_single (per-pixel MSE of one
  draw, averaged over draws), var_draws (per-pixel variance across draws, ddof 1, an
  estimate of tr C / pixels) and their ratio calibration = mse_single / (2 var_draws):
  about 1 when the error is all spread, above 1 when draws share a bias (None where an
  image's draws are all equal).
  """
  if len(samples) < 2:
    raise ValueError(f'spread needs at least 2 draws per image, got {len(samples)}')
  axes = tuple(range(2, samples.ndim))
  mse_single = np.mean((samples - images[None]) ** 2, axis=axes).mean(axis=0)  # (n,)
  var_draws = samples.var(axis=0, ddof=1).mean(axis=tuple(range(1, samples.ndim - 1)))
  # Draws that agree exactly (a U-Net's, whatever the seed) have no calibration: None,
  # not inf, which JSON cannot hold.
  distinct = np.any(samples != samples[:1], axis=(0,) + axes)  # (n,)
  calibration = (float(np.mean(mse_single / (2.0 * var_draws))) if distinct.all()
                 else None)
  return {'mse_single': float(mse_single.mean()), 'var_draws': float(var_draws.mean()),
          'calibration': calibration}


# The contour+bone mask's levels (DESIGN.md: background 0, leg 0.5, bone 1.0), split
# half-way between them.
REGIONS = {'bone': (0.75, 2.0), 'soft_tissue': (0.25, 0.75), 'air': (-1.0, 0.25)}


def error_by_region(samples: np.ndarray, images: np.ndarray,
                    contour_bone: np.ndarray) -> dict[str, float]:
  """Mean signed error (sample - truth) over draws, images and the pixels of each region of
  the contour+bone mask: where a sampler leaves the condition's brightness in its draws
  (SDEdit starts from the mask), this is positive there and shared by all seeds.

  samples: (K, n, H, W, 1); images and contour_bone: (n, H, W, 1). A region without
  pixels gets None.
  """
  err = (samples - images[None]).mean(axis=0)  # (n, H, W, 1): the draws' shared error
  inside = {name: (contour_bone >= lo) & (contour_bone < hi)
            for name, (lo, hi) in REGIONS.items()}
  # None, not NaN (which is not JSON), for a region no image has.
  return {name: float(err[m].mean()) if m.any() else None for name, m in inside.items()}


def ideal_gain_db(k: int) -> float:
  """PSNR gain of the average of k calibrated draws over one draw: 10 log10(2k / (k+1))."""
  return 10.0 * np.log10(2.0 * k / (k + 1.0))


def draw_dir(workdir: str, condition: str, setting: str, seed: int,
             step: int | None = None, other_split: str | None = None) -> str:
  """Where one seed's draws go: workdir/eval_posterior[_<other_split>]/[step_S/]<condition>/
  <setting as a folder name>/seed_<seed> (other_split: a split other than the run's own)."""
  root = 'eval_posterior' + (f'_{other_split}' if other_split else '')
  return os.path.join(evaluate.output_dir(workdir, condition, step, root=root),
                      sampler_setting.setting_dir(setting), f'seed_{seed}')


def run(workdir: str, k: int, setting: str, reference: str | None, out: str,
        condition: str | None = None,
        reference_psnr: tuple[str, float] | None = None,
        step: int | None = None, first_seed: int | None = None,
        split: str | None = None) -> dict:
  base = run_config.load(workdir)
  seeds = [int(base.seed if first_seed is None else first_seed) + s for s in range(k)]
  if condition:
    base.eval.condition = condition
  # Another split than the run's eval split (e.g. validation, to check a sampler tuned on
  # the test subset on unseen images) gets its own folders: the batch cache is per split.
  other_split = split is not None and split != base.eval.split
  if other_split:
    if reference:
      raise ValueError(f'--reference is a run\'s own evaluation of {base.eval.split!r}, '
                       f'not of --split={split!r}: draw the reference with --setting pc:500.')
    base.eval.split = split
  condition = evaluate.eval_condition(base)
  setting = sampler_setting.expand(base.method, setting, condition)  # `fast`, `fast-air`
  config = sampler_setting.configure(base, setting)
  tag = sampler_setting.setting_dir(setting)
  draws, per_seed, dirs = [], [], []
  own_split = split if other_split else None
  others = {m: [] for m in OTHER_METRICS}
  for s, seed in enumerate(seeds):
    config.seed = seed
    print(f'== {workdir} {condition} {setting} seed {seed} ({s + 1}/{k})',
          file=sys.stderr, flush=True)
    d = draw_dir(workdir, condition, setting, seed, step, own_split)
    dirs.append(d)
    got = evaluate.evaluate(config, workdir, out_dir=d, step=step)
    by_index = report.load_samples(os.path.join(d, 'samples.npz'))
    draws.append(np.stack([by_index[i] for i in sorted(by_index)]).astype(np.float64))
    per_seed.append(got['psnr_mean'])
    for m in OTHER_METRICS:
      others[m].append(got.get(f'{m}_mean'))
  data = input_pipeline.load_split(config, config.eval.split, int(config.eval.num_images))
  images = data['image'].astype(np.float64)
  samples = np.stack(draws)
  curve = average_curve(samples, images)
  result = {
      'workdir': workdir, 'method': base.method, 'condition': condition,
      'checkpoint_step': got['checkpoint_step'], 'setting': setting,
      'nfe': sampler_setting.nfe(config), 'split': config.eval.split,
      'n_images': int(len(images)), 'k': k, 'seeds': seeds,
      'single_sample_psnr_per_seed': per_seed,
      'single_sample_psnr_mean': float(np.mean(per_seed)),
      'single_sample_means_per_seed': others,
      'average_of_k': curve,
      'ideal_average_of_k_psnr': [curve['psnr'][0] + ideal_gain_db(i) for i in curve['k']],
      'spread': spread(samples, images) if k > 1 else None,
      'mean_error_by_region': error_by_region(samples, images, data['contour_bone']),
      'draw_dirs': dirs,  # each seed's samples.npz, for experiments.bias_maps
  }
  if reference:
    ref_cfg = run_config.load(reference)
    ref_path = os.path.join(evaluate.output_dir(reference, condition), 'metrics.json')
    with open(ref_path, encoding='utf-8') as f:
      ref = json.load(f)
    result['reference'] = {'workdir': reference, 'method': ref_cfg.method,
                           'psnr': ref['psnr_mean'], 'mae': ref['mae_mean']}
  elif reference_psnr:  # (label, PSNR): a figure from elsewhere, e.g. in RESULTS.md
    label, value = reference_psnr
    result['reference'] = {'workdir': None, 'method': label, 'psnr': value, 'mae': None}
  os.makedirs(out, exist_ok=True)
  # The setting is in the name so that several settings can share one --out folder.
  stem = os.path.join(out, f'posterior_{base.method}_{condition}_{tag}'
                      + ('' if step is None else f'_step{step}')
                      + (f'_{split}' if other_split else ''))
  files.write_json(stem + '.json', result)
  plot(result, stem + '.png')
  return result


def plot(result: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(4.6, 3.4))
  c = result['average_of_k']
  ax.plot(c['k'], c['psnr'], 'o-',
          label=f"average of k {result['method'].upper()} samples ({result['setting']})")
  ax.plot(c['k'], result['ideal_average_of_k_psnr'], ':', color='0.4',
          label='calibrated sampler: PSNR(1) + 10 log10(2k / (k + 1))')
  if 'reference' in result:
    r = result['reference']
    ax.axhline(r['psnr'], color='r', ls='--', label=f"{r['method']}: {r['psnr']:.2f} dB")
  ax.set_xlabel('samples averaged, k')
  ax.set_ylabel('PSNR (dB)')
  ax.set_title(f"{result['condition']}, n = {result['n_images']} "
               f"{result.get('split', 'test')} images")
  ax.legend(fontsize=7)
  plots.save_figure(fig, path, dpi=120)


def _mean(values: list | None) -> float | None:
  """Mean over seeds; None where a file predates the field or the metric does not apply."""
  if not values or any(v is None for v in values):
    return None
  return float(np.mean(values))


def summarize(paths: list[str]) -> list[dict]:
  """Single-draw PSNR over seeds, per setting, from this script's JSON files.

  Rows (sorted by NFE, then mean): setting, nfe, seeds, per-seed PSNR, mean, std over seeds
  (ddof 1) and its standard error, the draws' mean error by mask region (None if not
  recorded), and the draws' pixel variance across seeds (None if not recorded): a
  sampler can gain single-draw PSNR by spreading its draws less than the posterior does,
  which this shows; and the means over seeds of OTHER_METRICS (None where
  not recorded). Where a `pc:500` file of the same run, condition, checkpoint and split
  drew the same seeds, each row also gets the paired gap to it: mean and std (ddof 1) over
  seeds of the per-seed PSNR differences. Seeds are shared, so a seed that is
  hard for one sampler is hard for all; pairing removes that from the gap's noise.
  """
  rows, pair_keys = [], []
  for path in paths:
    with open(path, encoding='utf-8') as f:
      r = json.load(f)
    # Stored by run(), so a summary outlives its workdir; older files need the run's config.
    nfe = r['nfe'] if 'nfe' in r else sampler_setting.nfe(
        sampler_setting.configure(run_config.load(r['workdir']), r['setting']))
    psnr = np.asarray(r['single_sample_psnr_per_seed'], np.float64)
    std = float(psnr.std(ddof=1)) if len(psnr) > 1 else float('nan')
    rows.append({'setting': r['setting'], 'nfe': nfe,
                 'method': r['method'], 'condition': r['condition'],
                 'n_images': r['n_images'], 'split': r.get('split', 'test'),  # older files
                 'seeds': len(psnr),
                 'psnr_per_seed': psnr.tolist(), 'psnr_mean': float(psnr.mean()),
                 'psnr_std': std, 'psnr_sem': std / np.sqrt(len(psnr)),
                 'draw_variance': (r.get('spread') or {}).get('var_draws'),
                 'error_by_region': r.get('mean_error_by_region'),  # None: older files
                 **{f'{m}_mean': _mean(r.get('single_sample_means_per_seed', {}).get(m))
                    for m in OTHER_METRICS}})
    # Unpaired (None) where a file does not record its seeds.
    pair_keys.append((r['workdir'], r['condition'], r.get('checkpoint_step'),
                      rows[-1]['split'], tuple(r['seeds'])) if r.get('seeds') else None)
  refs = {key: row for key, row in zip(pair_keys, rows)
          if key is not None and row['setting'] == 'pc:500'}
  for key, row in zip(pair_keys, rows):
    ref = refs.get(key) if key is not None else None
    if ref is not None and row is not ref:
      d = np.subtract(row['psnr_per_seed'], ref['psnr_per_seed'])
      row['gap_paired_mean'] = float(d.mean())
      row['gap_paired_std'] = float(d.std(ddof=1)) if len(d) > 1 else float('nan')
  rows.sort(key=lambda r: (r['nfe'], r['psnr_mean']))
  return rows


def parse_reference_psnr(text: str) -> tuple[str, float]:
  """'LABEL=PSNR' -> (label, psnr); the label may itself contain '='."""
  label, _, value = text.rpartition('=')
  try:
    return label or 'reference', float(value)
  except ValueError:
    raise ValueError(f'--reference_psnr={text!r}: expected LABEL=PSNR with PSNR a number '
                     'in dB, e.g. "U-Net=30.54"') from None


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', help='a trained CTM or CSM run (required unless --summarize)')
  p.add_argument('--k', type=int, default=8, help='samples per image (seeds)')
  p.add_argument('--setting', default='pc:100',
                 help="solver:n[:name=value,...], or 'fast' / 'fast-air': the run's method's "
                      'setting (score_sde_knee/sampler_setting.py)')
  p.add_argument('--condition', default=None, help='CSM: contour or contour_bone')
  p.add_argument('--reference', default=None, help='a run evaluated with --mode=eval')
  p.add_argument('--reference_psnr', default=None,
                 help='instead of --reference: LABEL=PSNR, a figure recorded elsewhere '
                      '(with --summarize: a dashed line in the plot)')
  p.add_argument('--step', type=int, default=None,
                 help='draw from this kept checkpoint instead of the newest')
  p.add_argument('--first_seed', type=int, default=None,
                 help="seeds first_seed..first_seed+k-1 (default: the run's config seed)")
  p.add_argument('--split', default=None,
                 help="draw on this split's eval subset instead of the run's (e.g. validation)")
  p.add_argument('--out', default='runs/posterior_mean')
  p.add_argument('--summarize', nargs='+', default=None, metavar='JSON',
                 help="instead of sampling: this script's JSON files -> one table "
                      '(printed), --out/<method>_<condition>_seeds.png per condition and '
                      '--out/<method>_spread.png (PSNR against spread)')
  a = p.parse_args()
  try:
    reference = parse_reference_psnr(a.reference_psnr) if a.reference_psnr else None
  except ValueError as e:
    p.error(str(e))
  if a.summarize:
    rows = summarize(a.summarize)
    os.makedirs(a.out, exist_ok=True)
    for condition in dict.fromkeys(r['condition'] for r in rows):
      posterior_plots.plot_summary(
          [r for r in rows if r['condition'] == condition],
          os.path.join(a.out, f"{rows[0]['method']}_{condition}_seeds.png"), reference)
    if any(r['draw_variance'] is not None for r in rows):
      posterior_plots.plot_spread(rows, os.path.join(a.out, f"{rows[0]['method']}_spread.png"))
    print(json.dumps(rows, indent=1))
    return
  if a.k < 1:
    p.error(f'--k must be >= 1, got {a.k}')
  if not a.workdir:
    p.error('--workdir is required (or --summarize JSON files)')
  print(json.dumps(run(a.workdir, a.k, a.setting, a.reference, a.out, a.condition,
                       reference, a.step, a.first_seed, a.split), indent=1))


if __name__ == '__main__':
  xla_cpu.configure()  # what main.py runs; before JAX starts
  progress.quiet_library_info()  # as main.py: TFDS's and jax's noise would bury the progress
  main()
