"""Speed, accuracy and memory of the cone-beam projector; prints one JSON object.

    python -m benchmarks.drr [--repeats 3] [--build phantom_64,phantom_256]

A 60-view scan (docs/geometry.md) of a 256^3 volume of 1 mm voxels onto 256 x 256 pixels: the
volume is a leg-like scene of ellipsoids (score_sde_knee.xray.analytic), whose exact line
integrals give the relative L2 error. Also timed: the same volume with no air layer
(the worst case for the projector, which skips layers of pure air), every voxel layer
sampled (max_step_mm=0), and the phantom_64 size, (z, y, x) = (260, 200, 200) at 1 mm
onto 64 x 64; with --build, the wall time of building knee_drr configs. Seconds are
wall-clock medians after one warm-up call; the machine's load average is recorded because
other processes share the cores.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from score_sde_knee.xray import analytic  # pylint: disable=g-import-not-at-top
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import projector


def time_calls(fn, repeats: int) -> dict[str, float]:
  """First call (compile + run) and the median / min of `repeats` later calls, in s."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  wall, cpu = [], []
  for _ in range(repeats):
    c0, t0 = os.times(), time.perf_counter()
    jax.block_until_ready(fn())
    t1, c1 = time.perf_counter(), os.times()
    wall.append(t1 - t0)
    cpu.append(c1.user + c1.system - c0.user - c0.system)
  median = statistics.median(wall)
  return {'seconds': median, 'seconds_min': min(wall),
          'cpu_seconds': statistics.median(cpu), 'compile_seconds': max(first - median, 0.0)}


def relative_l2(x, ref) -> float:
  x = np.asarray(x, np.float64)
  return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def bench_projector(repeats: int) -> dict:
  results = {}
  geometry = geometry_lib.ConeBeamGeometry()
  angles = geometry.angles_deg()
  scene = analytic.knee_like(1.0)
  volume = analytic.voxelise(scene, (256, 256, 256), (1.0, 1.0, 1.0))
  sources, pixels = analytic.rays(geometry, angles)
  exact = analytic.line_integrals(scene, sources, pixels)

  def scan(vol, **kwargs):
    return lambda: projector.project(vol, (1.0, 1.0, 1.0), geometry, angles, **kwargs)

  t = time_calls(scan(volume), repeats)
  results.update({f'scan_256_{k}': v for k, v in t.items()})
  results['scan_256_rel_l2'] = relative_l2(scan(volume)(), exact)
  t = time_calls(scan(volume, max_step_mm=0.0), repeats)
  results['scan_256_every_layer_seconds'] = t['seconds']
  results['scan_256_every_layer_rel_l2'] = relative_l2(scan(volume, max_step_mm=0.0)(),
                                                       exact)
  # Water everywhere around the leg: no layer can be skipped.
  dense = volume + np.float32(0.019) * (volume == 0)
  results['scan_256_no_air_seconds'] = time_calls(scan(dense), repeats)['seconds']

  small = geometry.with_detector(64)
  volume_64 = analytic.voxelise(scene, (260, 200, 200), (1.0, 1.0, 1.0))
  t = time_calls(lambda: projector.project(volume_64, (1.0, 1.0, 1.0), small, angles),
                 repeats)
  results['scan_64_volume_zyx'] = [260, 200, 200]
  results.update({f'scan_64_{k}': v for k, v in t.items()})
  results['scan_64_rel_l2'] = relative_l2(
      projector.project(volume_64, (1.0, 1.0, 1.0), small, angles),
      analytic.line_integrals(scene, *analytic.rays(small, angles)))
  return results


def bench_builds(configs: list[str]) -> dict[str, float]:
  """Wall seconds to build each knee_drr config from scratch in a fresh temp data dir
  (phantoms, projections, masks and TFDS writing), each in its own process."""
  import subprocess
  import tempfile
  out = {}
  for name in configs:
    with tempfile.TemporaryDirectory() as data_dir:
      t0 = time.perf_counter()
      subprocess.run([sys.executable, '-m', 'datasets.knee_drr.build', name,
                      '--data_dir', data_dir], check=True, capture_output=True,
                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
      out[f'build_{name}_s'] = time.perf_counter() - t0
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3, help='Timed calls after warm-up.')
  parser.add_argument('--build', default='', help='comma-separated knee_drr configs to '
                      'build from scratch and time, e.g. phantom_64,phantom_256')
  args = parser.parse_args(argv)
  results = {'device': str(jax.devices()[0].device_kind), 'platform': jax.default_backend(),
             'cpu_count': os.cpu_count(), 'jax_version': jax.__version__}
  results.update(bench_projector(args.repeats))
  if args.build:
    results.update(bench_builds([c for c in args.build.split(',') if c]))
  results['load_average_1min'] = os.getloadavg()[0]
  results['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                    for k, v in results.items()}, indent=1))


if __name__ == '__main__':
  main()
