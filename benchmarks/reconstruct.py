"""Speed of the back-projector beside the projector, and of FDK, CGLS and SIRT; prints JSON.

    python -m benchmarks.reconstruct [--size 64|128] [--iters 10] [--repeats 3]

A 60-view scan (docs/geometry.md) of a leg-like ellipsoid scene voxelised on a size^3 grid
spanning the 192 mm field of view (3 mm voxels at 64, 1.5 mm at 128), onto size x size
pixels. The projector skips the air around the leg, the back-projector cannot (its input
is a sinogram), so the projector is also timed on the same grid filled with tissue (no
air to skip). Seconds are wall-clock medians after one warm-up call (which compiles);
the machine's load average is recorded because other processes share the cores.
"""
import argparse
import json
import os
import sys

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from benchmarks.drr import relative_l2, time_calls  # pylint: disable=g-import-not-at-top
from score_sde_knee.xray import analytic
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import projector
from score_sde_knee.xray import reconstruct


def bench(size: int, iters: int, repeats: int) -> dict:
  geometry = geometry_lib.ConeBeamGeometry().with_detector(size)
  angles = geometry.angles_deg()
  spacing = (192.0 / size,) * 3
  shape = (size, size, size)
  scene = analytic.knee_like(0.7)
  volume = analytic.voxelise(scene, shape, spacing)
  dense = volume + np.float32(0.019) * (volume == 0)
  sinogram = analytic.line_integrals(scene, *analytic.rays(geometry, angles)).astype(
      np.float32)
  args = (shape, spacing, geometry, angles)
  calls = {
      'project': lambda: projector.project(volume, spacing, geometry, angles),
      'project_no_air': lambda: projector.project(dense, spacing, geometry, angles),
      'backproject': lambda: reconstruct.backproject(sinogram, *args),
      'fdk': lambda: reconstruct.reconstruct_fdk(sinogram, *args),
      'cgls': lambda: reconstruct.reconstruct_cgls(sinogram, *args, n_iters=iters),
      'sirt': lambda: reconstruct.reconstruct_sirt(sinogram, *args, n_iters=iters),
  }
  out = {'size': size, 'views': len(angles), 'voxel_mm': spacing[0], 'iters': iters}
  for name, fn in calls.items():
    t = time_calls(fn, repeats if name not in ('cgls', 'sirt') else 1)
    out[f'{name}_seconds'] = t['seconds']
    out[f'{name}_compile_seconds'] = t['compile_seconds']
  out['backproject_over_project'] = out['backproject_seconds'] / out['project_seconds']
  out['backproject_over_project_no_air'] = (out['backproject_seconds']
                                            / out['project_no_air_seconds'])
  mid = size // 2  # An even grid: slices mid - 1 and mid straddle z = 0.
  for name in ('fdk', 'cgls', 'sirt'):
    result = calls[name]()
    rec = np.asarray(result[0] if isinstance(result, tuple) else result)
    out[f'{name}_mid_plane_rel_l2'] = relative_l2(rec[mid - 1:mid + 1],
                                                  volume[mid - 1:mid + 1])
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=64, choices=(64, 128),
                      help='Grid and detector size (64: 3 mm voxels, 128: 1.5 mm).')
  parser.add_argument('--iters', type=int, default=10, help='CGLS and SIRT iterations.')
  parser.add_argument('--repeats', type=int, default=3, help='Timed calls after warm-up.')
  args = parser.parse_args(argv)
  results = {'device': str(jax.devices()[0].device_kind), 'platform': jax.default_backend(),
             'cpu_count': os.cpu_count(), 'jax_version': jax.__version__}
  results.update(bench(args.size, args.iters, args.repeats))
  results['load_average_1min'] = os.getloadavg()[0]
  print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                    for k, v in results.items()}, indent=1))


if __name__ == '__main__':
  main()
