"""Time to build knee_drr's phantoms from scratch per phantom revision, extrapolated.

    python -m benchmarks.phantom_build [--revisions 2,3] [--patients 3]

Times `phantom.make_phantom` and its 60-view scan (`drr.scan_volume`) for a few patients of
the phantom_64 config (2 mm voxels, 64 px) and of phantom_256 (1 mm, 256 px), and
extrapolates to a whole config (patients x (phantom + scan)); the TFDS
write is left out. The first revision-3 phantom of a process also smooths the four bone
meshes (`bone_meshes.smooth_bone`, cached): reported apart as `mesh_setup_s`. Prints JSON.
"""
import argparse
import json
import os
import time

import numpy as np

from benchmarks import machine
from score_sde_knee.xray import bone_meshes
from score_sde_knee.xray import drr
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import phantom

_CONFIGS = dict(phantom_64=(2.0, 64, 33), phantom_256=(1.0, 256, 55))


def _timed(fn):
  t = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--revisions', default='2,3')
  ap.add_argument('--patients', type=int, default=3, help='phantoms timed per config')
  args = ap.parse_args(argv)
  _, mesh_s = _timed(lambda: [bone_meshes.smooth_bone(b) for b in bone_meshes.BONES])
  out = dict(machine=machine.cpu_model(), cores=os.cpu_count(), mesh_setup_s=mesh_s,
             configs={})
  for rev in (int(r) for r in args.revisions.split(',')):
    for name, (spacing, det, n) in _CONFIGS.items():
      geo = geometry_lib.ConeBeamGeometry().with_detector(det)
      angles = np.arange(60, dtype=np.float32) * 6.0
      make, scan = [], []
      for seed in range(args.patients):
        ph, t = _timed(lambda: phantom.make_phantom(seed, spacing_mm=spacing, revision=rev))
        make.append(t)
        _, t = _timed(lambda: drr.scan_volume(ph.hu, ph.spacing_mm, geo, angles))
        scan.append(t)
      # The first scan compiles; the median of the rest (or the only one) is the figure.
      per_scan = float(np.median(scan[1:] if len(scan) > 1 else scan))
      out['configs'][f'{name}_rev{rev}'] = dict(
          phantom_s=float(np.median(make)), scan_60_views_s=per_scan, patients=n,
          extrapolated_build_min=n * (float(np.median(make)) + per_scan) / 60)
  print(json.dumps(out, indent=1))


if __name__ == '__main__':
  main()
