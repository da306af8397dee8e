"""The CTM contour runs against training steps, redrawn from the result files in git.

    python -m experiments.plot_ctm_contour_runs --out docs/ctm_contour_two_runs_16000_cpu.png

Left: per run, the ancestral PC-25 four-draw mean and the average of those four draws at
each checkpoint, the PC N = 500 draws (light) and their mean ± std, next to the U-Net
contour band (the runs with a result file). Right: each run's validation DSM loss. Every
figure comes from benchmarks/results/ (knee_drr 1.0.0), so the plot can be remade after the
runs are gone. Prints the plotted series as JSON.
"""
import argparse
import glob
import json
import os
import re
import sys

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde_knee.utils import plots  # pylint: disable=g-import-not-at-top

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       'benchmarks', 'results')
COLOURS = ('tab:blue', 'tab:red', 'tab:green', 'tab:purple')
# The U-Net contour runs with a result file (seed 42 to step 4000, seeds 44 and 45).
UNET_FILES = ('eval_unet_contour_4000_cpu.json', 'eval_unet_contour_seed44_cpu.json',
              'eval_unet_contour_seed45_cpu.json')


def _load(path: str) -> dict:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f'{path}: result file missing (expected in git under '
                            'benchmarks/results/).') from None


def collect(results: str = RESULTS) -> dict:
  """The plotted numbers, read from the result files."""
  at = lambda name: _load(os.path.join(results, name))
  unet = [at(f)['psnr_mean'] for f in UNET_FILES]
  out = {'unet_psnr': unet, 'runs': {}}
  # The runs: one per seed with a training-curve file, up to its last step.
  last = {}
  for path in glob.glob(os.path.join(results, 'training_curve_ctm_contour_seed*_cpu.json')):
    m = re.search(r'_seed(\d+)_(\d+)_cpu\.json$', path)
    if m:
      last[int(m[1])] = max(last.get(int(m[1]), 0), int(m[2]))
  for seed, last_step in sorted(last.items()):
    ancestral = []
    prefix = os.path.join(results, f'posterior_ctm_contour_seed{seed}_')
    for path in glob.glob(prefix + '*ancestral_cpu.json'):
      if not re.search(rf'seed{seed}_(\d+_)?ancestral_cpu\.json$', path):
        continue  # other settings (ancestral50, snr08, ...)
      r = _load(path)
      if r['setting'] != 'pc:25:pred=ancestral':
        continue
      k4 = r['average_of_k']['k'].index(4)
      ancestral.append((r['checkpoint_step'], r['single_sample_psnr_mean'],
                        r['average_of_k']['psnr'][k4]))
    pc500 = {}
    for path in glob.glob(prefix + '*_pc500_cpu.json'):
      r = _load(path)
      if r.get('split', 'test') == 'test' and r['k'] >= 4:
        pc500[r['checkpoint_step']] = r['single_sample_psnr_per_seed']
    # Single draws from --mode=eval: the Table I checkpoint (step 2000) and any later one.
    single = {2000: at(f'eval_ctm_contour_seed{seed}_pc500_cpu.json')['psnr_mean']}
    for path in glob.glob(prefix.replace('posterior_', 'eval_') + '*_pc500_cpu.json'):
      m = re.search(r'_seed\d+_(\d+)_pc500_cpu\.json$', path)
      if m and int(m[1]) not in pc500:  # a step with four draws shows those instead
        single[int(m[1])] = _load(path)['psnr_mean']
    curve = at(f'training_curve_ctm_contour_seed{seed}_{last_step}_cpu.json')
    (eval_loss,) = [v['eval_loss'] for v in curve.values()]
    out['runs'][seed] = {'ancestral': sorted(ancestral), 'pc500_draws': dict(sorted(pc500.items())),
                         'pc500_single': dict(sorted(single.items())), 'eval_loss': eval_loss}
  return out


def plot(series: dict, out: str):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11, 5.2))
  unet = np.asarray(series['unet_psnr'])
  # std with ddof=1 over runs and over draws, as RESULTS.md quotes them.
  ax.axhspan(unet.mean() - unet.std(ddof=1), unet.mean() + unet.std(ddof=1), color='0.85',
             zorder=0, label=f'U-Net, {len(unet)} runs: mean ± std')
  ax.axhline(unet.mean(), color='0.4', ls=':', lw=1)
  runs = series['runs']
  for j, (seed, run) in enumerate(runs.items()):
    c = COLOURS[j % len(COLOURS)]
    steps, single, avg = zip(*run['ancestral'])
    ax.plot(steps, single, 'o-', color=c, label=f'seed {seed}: ancestral PC-25, four-draw mean')
    ax.plot(steps, avg, 's--', color=c, mfc='white', label=f'seed {seed}: average of the 4 draws')
    for i, (step, draws) in enumerate(run['pc500_draws'].items()):
      x = step + 300 * (j - (len(runs) - 1) / 2)  # runs at one step: side by side
      ax.plot([x] * len(draws), draws, 'D', color=c, alpha=0.35, ms=5)
      label = f'seed {seed}: PC N = 500, four draws (light) and mean ± std'
      ax.errorbar(x, np.mean(draws), yerr=np.std(draws, ddof=1), fmt='D', color=c, ms=8,
                  capsize=3, label=label if i == 0 else None)
    s_steps, s_psnr = zip(*sorted(run['pc500_single'].items()))
    ax.plot(s_steps, s_psnr, 'D', color=c, ms=6, mfc='white', mew=1.5,
            label=f'seed {seed}: PC N = 500, one draw')
    e_steps, e_loss = zip(*run['eval_loss'])
    ax_loss.plot(e_steps, e_loss, '.-', color=c, label=f'seed {seed}')
  ax.set(xlabel='training step', ylabel='PSNR (dB), 30 test images',
         title=f'CTM contour, {len(runs)} training runs: PSNR')
  ax.grid(alpha=0.3)
  # Below the axes: inside, nine entries would cover the low draws.
  ax.legend(fontsize=7, ncol=2, loc='upper center', bbox_to_anchor=(0.5, -0.16))
  ax_loss.set(xlabel='training step', ylabel='validation DSM loss (two batches)',
              title='validation loss (compare shapes, not levels)',
              ylim=(15, 45),
              xticks=range(0, max(s for r in runs.values() for s, _ in r['eval_loss']) + 1, 4000))
  ax_loss.grid(alpha=0.3)
  ax_loss.legend(fontsize=8)
  plots.save_figure(fig, out)
  return fig


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--results', default=RESULTS, help='folder of the result files')
  p.add_argument('--out', required=True, help='PNG to write')
  args = p.parse_args(argv)
  series = collect(args.results)
  plot(series, args.out)
  print(json.dumps(series, indent=1, default=str))


if __name__ == '__main__':
  main()
