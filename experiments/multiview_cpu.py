"""Independent vs consistent sampling of all 60 views of one test leg (multiview.py).

    TFDS_DATA_DIR=/tmp/tfds python -m experiments.multiview_cpu --workdir runs/ctm_cb \
        --out /tmp/multiview_cpu.json

Reads one test patient's 60 masks and DRRs from the run's data set (knee_drr, sorted by
angle), samples the 60 views with the `fast` preset twice per seed, independently (the
paper's way) and with the consistency step, and writes per set: `consistency_error`
(multiview.consistency_error on the reconstruction grid; also for the true DRRs, the
floor), `view_psnr_mean`, `view_mae_mean` against the true DRRs, and `seconds_per_leg`
(draws after the first, so without compilation). The first draw's time, with compilation,
is `seconds_first`.
"""
import argparse
import functools
import json
import os
import time

import jax
import numpy as np
import tensorflow_datasets as tfds

from score_sde_knee import evaluate
from score_sde_knee import metrics
from score_sde_knee import model_utils
from score_sde_knee import methods
from score_sde_knee import multiview
from score_sde_knee import parallel
from score_sde_knee import run_config
from score_sde_knee import sampler_setting
from score_sde_knee import train_state as ts
from score_sde_knee.sampler_setting import SamplerSettings
from score_sde_knee.xray import geometry as geometry_lib


def load_leg(config, patient: str | None, data_dir: str | None):
  """(patient id, angles (60,), images (60, H, W, 1), masks (60, H, W, 1)) of one test
  patient, the first one by name unless `patient` is given."""
  import datasets.knee_drr.knee_drr_dataset_builder  # noqa: F401  Registers knee_drr.
  name = f'{config.data.name}/{config.data.builder_config}:{config.data.version}'
  views = {}
  source = tfds.data_source(name, split='test', data_dir=data_dir or None)
  for ex in (source[i] for i in range(len(source))):
    views.setdefault(ex['patient_id'].decode(), []).append(ex)
  pid = patient or sorted(views)[0]
  if pid not in views:
    raise ValueError(f'patient {pid!r} is not in the test split: {sorted(views)}')
  leg = sorted(views[pid], key=lambda ex: float(ex['angle_deg']))
  stack = lambda key: np.stack([ex[key] for ex in leg]).astype(np.float32)
  return pid, stack('angle_deg'), stack('image'), stack(config.condition)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--out', required=True, help='JSON file to write.')
  parser.add_argument('--data_dir', default='', help='TFDS data dir (default: the run\'s).')
  parser.add_argument('--patient', default=None)
  parser.add_argument('--grid', type=int, default=64, help='Reconstruction grid n^3.')
  parser.add_argument('--n_iters', type=int, default=3)
  parser.add_argument('--every', type=int, default=1)
  parser.add_argument('--start', type=int, default=0)
  parser.add_argument('--draws', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  config = run_config.load(args.workdir)
  setting = sampler_setting.preset('fast', config.method, config.condition)
  config = sampler_setting.configure(config, setting)
  settings = SamplerSettings.from_config(config)
  params, step = evaluate.restore_ema_params(config, args.workdir, parallel.make_mesh())
  sde = ts.make_sde(config)
  score = model_utils.get_score_fn(model_utils.create_model(config), sde,
                                   methods.get(config.method),
                                   scale_by_sigma=bool(config.model.scale_by_sigma))
  pid, angles, images, masks = load_leg(config, args.patient, args.data_dir)
  geometry = geometry_lib.ConeBeamGeometry().with_detector(images.shape[1])
  consistency = multiview.for_geometry(geometry, args.grid, angles, n_iters=args.n_iters,
                                       every=args.every, start=args.start)

  @functools.partial(jax.jit, static_argnums=2)
  def sample(cond, rng, consistency):
    return multiview.sample_leg(lambda x, t, c: score(params, x, t, c), sde, cond, rng,
                                settings, consistency, method=config.method)

  error = lambda views: float(multiview.consistency_error(views, consistency))
  result = {'workdir': args.workdir, 'step': step, 'patient': pid, 'setting': setting,
            'grid': {'shape': consistency.volume_shape, 'spacing_mm': consistency.spacing_mm},
            'n_iters': args.n_iters, 'every': args.every, 'start': args.start,
            'seed': args.seed, 'truth': {'consistency_error': error(images)}}
  for name, c in (('independent', None), ('consistent', consistency)):
    draws, seconds = [], []
    for d in range(args.draws):
      begin = time.time()
      views = np.asarray(sample(masks, jax.random.PRNGKey(args.seed + d), c))
      seconds.append(time.time() - begin)
      draws.append(views)
      print(f'{name} draw {d}: {seconds[-1]:.1f} s', flush=True)
    result[name] = {
        'consistency_error': [error(v) for v in draws],
        'view_psnr_mean': [float(np.mean(metrics.psnr(v, images))) for v in draws],
        'view_mae_mean': [float(np.mean(metrics.mae(v, images))) for v in draws],
        'mean_of_draws': {'consistency_error': error(np.mean(draws, axis=0)),
                          'view_psnr_mean': float(np.mean(metrics.psnr(
                              np.mean(draws, axis=0), images)))},
        'seconds_first': seconds[0],
        'seconds_per_leg': float(np.mean(seconds[1:])) if len(seconds) > 1 else None,
    }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()
