"""The GPU script's `leg` part (benchmarks/gpu_figures.py): every view of one held-out leg
sampled in one batch, from the short run's model with the 49-NFE setting, twice with the
same key: independently (the paper's way) and as projections of one volume
(score_sde_knee/multiview.py, its default consistency step). It records, per set, the
compile and the sampling seconds of one leg, PSNR and MAE against the leg's DRRs, and the
consistency error (the relative residual of the set's own least-squares volume, 30 CGLS
iterations; the DRRs' is the floor the grid leaves), and writes gpu_leg.png: a few views of
the masks and of each set, and the mid slices of the sets' volumes.

Needs none of TFDS, Grain, orbax or TensorFlow: it runs on the device image as it is.
"""
import os
import time
from typing import Any

import jax
import numpy as np

from score_sde_knee import metrics
from score_sde_knee import multiview
from score_sde_knee import multiview_figure
from score_sde_knee.xray import geometry as geometry_lib

GRID = 64  # The reconstruction grid's n^3 (n = the image size below 64 px), as --views=all.


def run(config, model, params, leg: dict[str, Any], out: str) -> dict[str, Any]:
  """leg: 'cond' and 'image' (V, H, W, 1), 'angles_deg' (V,), 'patient'. Returns the
  part's record; the figure goes to out/gpu_leg.png."""
  size = int(config.data.image_size)
  geometry = geometry_lib.ConeBeamGeometry().with_detector(size)
  consistency = multiview.for_geometry(geometry, min(GRID, size), leg['angles_deg'])
  masks, truth = np.asarray(leg['cond'], np.float32), np.asarray(leg['image'], np.float32)
  multiview.check_views(masks, consistency, 'masks')
  sample, key = multiview.leg_sampler(config, model), jax.random.key(0)
  sets, views = {}, {}
  for name, c in (('independent', None), ('consistent', consistency)):
    t0 = time.perf_counter()
    compiled = sample.lower(params, masks, key, c).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    views[name] = np.asarray(compiled(params, masks, key), np.float32)
    sets[name] = {'compile_s': compile_s, 'sample_s': time.perf_counter() - t0,
                  'psnr': float(metrics.psnr(views[name], truth).mean()),
                  'mae': float(metrics.mae(views[name], truth).mean())}
  views['truth'], sets['truth'] = truth, {}
  volumes = {}
  for name, v in views.items():
    volume, error = multiview.least_squares(v, consistency)
    volumes[name], sets[name]['consistency_error'] = np.asarray(volume), float(error)
  png = os.path.join(out, 'gpu_leg.png')
  multiview_figure.save(png, {'masks': masks, **views}, consistency.angles_deg, volumes,
                        consistency.spacing_mm,
                        title=f"{leg['patient']}: {len(masks)} views of {size} px, sampled "
                              'independently and as one volume')
  return {'patient': leg['patient'], 'views': len(masks), 'image_size': size,
          'grid': consistency.volume_shape[0], 'sets': sets, 'png': png}
