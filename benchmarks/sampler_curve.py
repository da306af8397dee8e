"""Quality vs network evaluations: fast PF-ODE solvers and shorter PC runs against PC N=500.

    python -m benchmarks.sampler_curve --workdirs runs/table/ctm_contour_bone \
        runs/table/ctm_contour runs/table/csm --out benchmarks/sampler_curve

For each trained workdir (a CSM workdir once per condition) and each sampler setting, the
run's own eval subset (its saved config.eval: split, view_stride, num_images, seed) is
sampled with the newest checkpoint (or --step's) and scored like `--mode=eval`. The
reference is the run's own `--mode=eval` result (workdir/eval/<condition>/metrics.json, PC
with the config's N, normally 500; with --step=S, `--mode=eval --step=S`'s
workdir/eval/step_S/<condition>/), which must exist. Each setting's batches go to
workdir/eval_samplers/[step_S/]<condition>/<setting>/ so an interrupted run resumes and the
run's own evaluation is never replaced. Prints one JSON object and writes out/curve.json,
out/curve.png and, per model and condition, out/samples_<method>_<condition>.png: the same
test images drawn by the reference and by every setting (--grid_images of them).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde_knee import evaluate  # pylint: disable=g-import-not-at-top
from score_sde_knee.utils import files
from score_sde_knee import input_pipeline
from score_sde_knee import methods
from score_sde_knee.utils import progress
from score_sde_knee import report
from score_sde_knee import run_config
from score_sde_knee import sampler_setting
from score_sde_knee.utils import plots
from score_sde_knee.utils import xla_cpu

DEFAULT_SETTINGS = ('heun:5', 'heun:10', 'heun:18', 'heun:25', 'dpm2:10', 'dpm2:25',
                    'pc:50', 'pc:100')
KEYS = ('psnr', 'mae', 'dice', 'ssim')


def run(workdirs: list[str], settings: list[str], out: str, grid_images: int = 4,
        step: int | None = None) -> dict:
  rows = []
  for workdir in workdirs:
    base = run_config.load(workdir)
    conditions = methods.get(base.method).conditions(base.condition)
    for condition in conditions:
      # `fast` names a string per method, `fast-air` per condition too; the rows and grid
      # show the string.
      resolved = [sampler_setting.expand(base.method, s, condition) for s in settings]
      ref_path = os.path.join(evaluate.output_dir(workdir, condition, step), 'metrics.json')
      if not os.path.exists(ref_path):
        step_flag = '' if step is None else f' --step={step}'
        raise FileNotFoundError(f'{ref_path} not found: run python main.py --mode=eval '
                                f'--workdir={workdir} --condition={condition}{step_flag} '
                                'first.')
      with open(ref_path, encoding='utf-8') as f:
        ref = json.load(f)
      base.eval.condition = condition
      rows.append({'workdir': workdir, 'method': base.method, 'condition': condition,
                   'setting': f"pc:{ref['sampler']['N']} (reference)",
                   'nfe': sampler_setting.nfe(base), 'seconds': None,
                   **{k: ref.get(f'{k}_mean') for k in KEYS}})
      for setting in resolved:
        config = sampler_setting.configure(base, setting)
        print(f'== {workdir} {condition} {setting}', file=sys.stderr, flush=True)
        t = time.monotonic()
        got = evaluate.evaluate(config, workdir, step=step,
                                out_dir=evaluate.sampler_dir(workdir, condition, setting, step))
        rows.append({'workdir': workdir, 'method': base.method, 'condition': condition,
                     'setting': setting, 'nfe': sampler_setting.nfe(config),
                     'seconds': time.monotonic() - t,
                     **{k: got.get(f'{k}_mean') for k in KEYS}})
      if grid_images > 0:
        save_samples_grid(workdir, condition, resolved, os.path.join(
            out, f'samples_{base.method}_{condition}.png'), grid_images, step)
  result = {'rows': rows, 'n_images': ref['n'], 'checkpoint_step': ref['checkpoint_step']}
  for r in rows:  # gap to the reference of the same model and condition
    ref_row = next(x for x in rows if x['workdir'] == r['workdir']
                   and x['condition'] == r['condition'] and x['seconds'] is None)
    r['psnr_gap_db'] = r['psnr'] - ref_row['psnr']
  os.makedirs(out, exist_ok=True)
  files.write_json(os.path.join(out, 'curve.json'), result)
  plot(rows, os.path.join(out, 'curve.png'))
  return result


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  groups = sorted({(r['method'], r['condition']) for r in rows})
  fig, axes = plt.subplots(1, len(groups), figsize=(7.4 * len(groups), 3.6), squeeze=False)
  for ax, (method, condition) in zip(axes[0], groups):
    mine = [r for r in rows if (r['method'], r['condition']) == (method, condition)]
    ref = next(r for r in mine if r['seconds'] is None)
    ax.axhspan(ref['psnr'] - 0.5, ref['psnr'] + 0.5, color='0.9',
               label=f"PC N=500 ± 0.5 dB ({ref['nfe']} NFE)")
    ax.axhline(ref['psnr'], color='0.4', lw=1)
    markers = {'heun': 'o-', 'dpm2': 's-', 'pc': '^-'}
    # One line per solver and option string (e.g. heun, heun churn=10), by NFE.
    lines = {}
    for r in mine:
      if r['seconds'] is not None:
        solver, _, rest = r['setting'].partition(':')
        label = ' '.join([solver] + rest.split(':')[1:])
        lines.setdefault((solver, label), []).append((r['nfe'], r['psnr']))
    for (solver, label), pts in sorted(lines.items()):
      ax.plot(*zip(*sorted(pts)), markers.get(solver, 'x-'), label=label)
    ax.axvline(50, color='r', lw=0.8, ls=':', label='goal: 50 NFE')
    scale, ticks = nfe_axis([r['nfe'] for r in mine if r['seconds'] is not None])
    ax.set_xscale(scale)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xticks([], minor=True)
    ax.set_xlabel('network evaluations per sample')
    ax.set_ylabel('PSNR (dB)')
    ax.set_title(f'{method.upper()} · {condition}')
    # Beside the plot: with a dozen settings a legend inside hides the points.
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.02, 1.0))
  plots.save_figure(fig, path, dpi=120)


def nfe_axis(nfes: list[int], goal: int = 50, min_gap: float = 0.1) -> tuple[str, list[int]]:
  """x scale and tick positions for PSNR vs NFE: ticks at the NFEs that were run.

  Log only when the NFEs (and the goal line) span more than 3x; ticks closer than min_gap
  of the axis to the previous one are dropped so that labels never overlap.
  """
  span = [*nfes, goal]
  log = max(span) > 3 * min(span)
  f = np.log if log else float
  width = (f(max(span)) - f(min(span))) or 1.0
  ticks = []
  for v in sorted(set(nfes)):
    if not ticks or (f(v) - f(ticks[-1])) / width >= min_gap:
      ticks.append(int(v))
  return ('log' if log else 'linear'), ticks


def save_samples_grid(workdir: str, condition: str, settings: list[str], path: str,
                      num_images: int = 4, step: int | None = None) -> None:
  """Rows: evenly spaced test images; columns: condition | reference | settings | truth."""
  config = run_config.load(workdir)
  ref_dir = evaluate.output_dir(workdir, condition, step)
  columns = [(f'PC N={config.sde.num_scales}',
              report.load_samples(os.path.join(ref_dir, 'samples.npz')))]
  for setting in settings:
    folder = evaluate.sampler_dir(workdir, condition, setting, step)
    columns.append((setting.replace(':', ' ', 1).replace(':', '\n').replace(',', '\n'),
                    report.load_samples(os.path.join(folder, 'samples.npz'))))
  common = sorted(set.intersection(*(set(c) for _, c in columns)))
  pick = report.evenly_spaced(common, num_images)
  data = input_pipeline.load_split(config, config.eval.split, max(pick) + 1)
  rows = [[data[condition][i]] + [c[i] for _, c in columns] + [data['image'][i]]
          for i in pick]
  plots.save_grid(path, rows, col_titles=['condition'] + [t for t, _ in columns]
                      + ['ground truth'], row_titles=[f'#{i}' for i in pick])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdirs', nargs='+', required=True)
  p.add_argument('--settings', nargs='+', default=list(DEFAULT_SETTINGS),
                 help='solver:n[:name=value,...], n = ode_steps for heun/dpm2 and N for '
                 f'pc; names: {sorted(sampler_setting.OPTIONS)}; or a preset '
                 f"{sampler_setting.PRESETS}, the setting for each run's method")
  p.add_argument('--out', default='benchmarks/sampler_curve')
  p.add_argument('--grid_images', type=int, default=4,
                 help='test images in each samples_*.png (0: no picture)')
  p.add_argument('--step', type=int, default=None,
                 help='evaluate this kept checkpoint instead of the newest (its reference: '
                      'main.py --mode=eval --step=STEP)')
  a = p.parse_args()
  print(json.dumps(run(a.workdirs, a.settings, a.out, a.grid_images, a.step), indent=1))


if __name__ == '__main__':
  xla_cpu.configure()  # what main.py runs; before JAX starts
  progress.quiet_library_info()  # as main.py: TFDS's and jax's noise would bury the progress
  main()
