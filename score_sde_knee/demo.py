"""The whole method on a laptop: data, a CTM on contour+bone, sampling, Table I, Fig. 3.

    python main.py --mode=demo --workdir=runs/demo

1. builds knee_drr/phantom_64 (once; cached in the TFDS data dir),
2. trains a CTM on contour_bone with the `cpu` preset for 350 steps instead of its 2000,
3. samples the cpu preset's labelled subset of the test split (every 6th view of each
   test patient, 30 images) with the `fast` sampler preset (sampler_setting.py: 49
   evaluations, 17 levels, ancestral predictor, two preconditioned momentum Langevin
   steps per level) instead of the paper's N = 500 (999 evaluations),
4. prints a Table I-style row and writes report/table.md and report/fig3.png.

On the 700-step model of earlier demos the 49-evaluation setting scored 0.4 dB above PC
with N = 100 (199 evaluations), and at 400 steps it already matched the 700-step PC
figure (benchmarks/RESULTS.md, "The CPU demo"), so the demo trains for half as long.
Every stage resumes: rerunning the command continues training from the newest
checkpoint and keeps finished evaluation batches.
"""
import os
import sys
import time

import ml_collections

from score_sde_knee.utils import progress
from score_sde_knee import run_config
from score_sde_knee import sampler_setting

# What the demo changes on top of configs/ctm.py:contour_bone,cpu (documented in README).
DEMO_OVERRIDES = {
    'training.num_train_steps': 350,   # ~7 min at 1.2 s per step on a 2-core Xeon @ 2 GHz
    'training.sample_every': 0,        # the demo's figure comes from the eval instead
    'training.eval_every': 350,        # one validation pass, at the end
    'eval.view_stride': 6,             # 30 test images: the Table I subset
    'eval.batch_size': 16,
}
# And it samples with this preset of sampler_setting.py (49 network evaluations).
DEMO_SAMPLER = 'fast'


def demo_config(data_dir: str | None = None) -> ml_collections.ConfigDict:
  from configs import ctm
  config = ctm.get_config('contour_bone,cpu')
  config = sampler_setting.configure(
      config, sampler_setting.preset(DEMO_SAMPLER, config.method, config.condition))
  for key, value in DEMO_OVERRIDES.items():
    section, field = key.split('.')
    config[section][field] = value
  if data_dir:
    config.data.data_dir = data_dir
  return config


def run_demo(workdir: str, data_dir: str | None = None,
             config: ml_collections.ConfigDict | None = None) -> dict:
  from datasets.knee_drr import build
  from score_sde_knee import evaluate
  from score_sde_knee import report
  from score_sde_knee import train

  config = config or demo_config(data_dir)
  t0 = time.monotonic()
  stage = lambda n, what: print(f'\n=== demo {n}/4: {what} (elapsed '
                                f'{progress.format_seconds(time.monotonic() - t0)}) ===',
                                file=sys.stderr, flush=True)
  stage(1, f'data knee_drr/{run_config.data_spec(config)}')
  build.build(run_config.data_spec(config), config.data.data_dir or None)
  stage(2, f'train CTM on {config.condition}, {config.training.num_train_steps} steps')
  train.train_and_evaluate(config, workdir)
  # num_images 0 means the whole labelled subset (every view_stride-th view).
  images = (f'{config.eval.num_images} test images' if config.eval.num_images else
            f'every {config.eval.view_stride}th test view')
  stage(3, f'sample {images} ({config.sampling.method}, N = {config.sde.num_scales}, '
           f'{sampler_setting.nfe(config)} network evaluations per image)')
  metrics = evaluate.evaluate(config, workdir)
  stage(4, 'report')
  paths = report.write_report([workdir], os.path.join(workdir, 'report'), num_images=4,
                              data_dir=config.data.data_dir or None)
  with open(paths['table.md'], encoding='utf-8') as f:
    print(f.read())
  print(f"Fig. 3 analogue: {paths['fig3.png']}\nTable: {paths['table.png']}\n"
        f'Total time: {progress.format_seconds(time.monotonic() - t0)}')
  return metrics
