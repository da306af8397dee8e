"""Our cone-beam projector side by side with DiffDRR (torch) and mbirjax (JAX); one JSON.

The peers cannot share one virtual environment (mbirjax excludes our jax==0.10.2), so the
full benchmark is two commands, one per venv (benchmarks/requirements.txt says how each
is made); each times our projector in the same process as its peer, so every ratio comes
from one run:

    nice -n 19 .venv-bench/bin/python benchmarks/drr_peers.py --peers diffdrr
    nice -n 19 .venv-mbirjax/bin/python benchmarks/drr_peers.py --peers mbirjax

Scene and scan (docs/geometry.md): analytic.knee_like(1.0) voxelised on a size^3 grid
covering 256 mm (1 mm voxels at the default size 256), the default ConeBeamGeometry with
a size x size detector of the same width, and --views views spread evenly over 360 deg
(60 views = 0, 6, ..., 354 deg). Every method gets the same attenuation volume (1/mm) and
returns line integrals (mu x mm, no exp); the error is the relative L2 distance to the
exact float64 integrals through the ellipsoids (analytic.line_integrals). Seconds are the
wall-clock median of --repeats calls after one warm-up call, whose time is reported as
first_call_seconds; each call goes from the volume in memory to a numpy (views, rows,
cols) array. A peer that cannot be imported is reported as skipped, with the reason.
"""
import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PEERS = ('diffdrr', 'mbirjax')
WORLD_MM = 256.0  # Edge of the cubic volume, whatever --size is.


@dataclasses.dataclass
class Case:
  """The volume, scan and reference shared by every method."""
  volume: np.ndarray        # (z, y, x) float32 attenuation, 1/mm
  voxel_mm: float
  geometry: object          # geometry.ConeBeamGeometry
  angles_deg: np.ndarray
  exact: np.ndarray         # (views, rows, cols) float64


def make_case(size: int, views: int) -> Case:
  from score_sde_knee.xray import analytic  # pylint: disable=g-import-not-at-top
  from score_sde_knee.xray import geometry as geometry_lib
  voxel = WORLD_MM / size
  geometry = dataclasses.replace(geometry_lib.ConeBeamGeometry().with_detector(size),
                                 num_views=views, angle_step_deg=360.0 / views)
  angles = geometry.angles_deg()
  scene = analytic.knee_like(1.0)
  volume = analytic.voxelise(scene, (size,) * 3, (voxel,) * 3)
  exact = analytic.line_integrals(scene, *analytic.rays(geometry, angles))
  return Case(volume, voxel, geometry, angles, exact)


def relative_l2(images, exact) -> float:
  images = np.asarray(images, np.float64)
  if images.shape != exact.shape:
    raise ValueError(f'DRR shape {images.shape} differs from the reference {exact.shape}')
  return float(np.linalg.norm(images - exact) / np.linalg.norm(exact))


def time_calls(fn, repeats: int) -> tuple[dict, np.ndarray]:
  """fn() -> numpy images. First call (compile + run) and the median of `repeats` more."""
  start = time.perf_counter()
  images = fn()
  first = time.perf_counter() - start
  wall = []
  for _ in range(repeats):
    start = time.perf_counter()
    images = fn()
    wall.append(time.perf_counter() - start)
  return {'seconds': statistics.median(wall), 'seconds_min': min(wall),
          'first_call_seconds': first}, images


def bench_ours(case: Case, repeats: int) -> dict:
  from score_sde_knee.xray import projector  # pylint: disable=g-import-not-at-top
  spacing = (case.voxel_mm,) * 3
  fn = lambda: np.asarray(projector.project(case.volume, spacing, case.geometry,
                                            case.angles_deg, max_step_mm=2.0,
                                            view_chunk=8))
  result, images = time_calls(fn, repeats)
  result['error'] = relative_l2(images, case.exact)
  result['config'] = {'max_step_mm': 2.0, 'view_chunk': 8}  # project()'s defaults
  return result


def bench_diffdrr(case: Case, repeats: int, renderer: str, views_per_call: int,
                  views_timed: int = 0) -> dict:
  """DiffDRR's DRR module with our geometry written as one camera pose per view.

  views_timed > 0: render only that many evenly spaced views of the scan and scale the
  time to the whole scan (views are independent renders: time is linear in their number;
  at 256^3 DiffDRR takes ~5 s per view on 2 cores, so 60 views x 4 calls take 20 min).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import torchio
  from diffdrr.drr import DRR
  from diffdrr.pose import RigidTransform
  g = case.geometry
  start = time.perf_counter()
  # torchio wants (channels, i, j, k) with the affine mapping index (i, j, k) to world
  # mm; our array is (z, y, x), so i = x. Voxel centres as in projector.project.
  affine = np.diag([case.voxel_mm] * 3 + [1.0])
  affine[:3, 3] = [-(s - 1) / 2 * case.voxel_mm for s in case.volume.shape[::-1]]
  density = torchio.ScalarImage(
      tensor=torch.from_numpy(np.ascontiguousarray(case.volume.transpose(2, 1, 0)))[None],
      affine=affine)
  # diffdrr.data.read() would turn the volume into a [0, 1] "density" from HU; ours is
  # attenuation already, so the Subject is built with the fields DRR reads, and the
  # identity `reorient` (read's orientation=None) leaves poses in our world frame.
  subject = torchio.Subject(volume=density, density=density, mask=None,
                            reorient=torch.eye(4), orientation=None, fiducials=None)
  drr = DRR(subject, sdd=g.source_to_detector_mm, height=g.detector_rows,
            width=g.detector_cols, delx=g.pixel_pitch_mm, renderer=renderer)
  # DiffDRR's camera: source at the origin, detector centre at +z (sdd away), row 0 at
  # +y, column 0 at +x and columns running to -x (reverse_x_axis=True, the default).
  # Ours: source -R e_d, beam e_d, columns along e_u, row 0 at +z. So the pose's
  # rotation has columns (-e_u, e_z, e_d), a proper rotation, and translation = source.
  theta = np.deg2rad(case.angles_deg)
  e_u = np.stack([np.cos(theta), np.sin(theta), 0 * theta], axis=-1)
  e_d = np.stack([-np.sin(theta), np.cos(theta), 0 * theta], axis=-1)
  e_z = np.broadcast_to([0.0, 0.0, 1.0], e_u.shape)
  poses = np.tile(np.eye(4), (len(theta), 1, 1))
  poses[:, :3, :3] = np.stack([-e_u, e_z, e_d], axis=-1)
  poses[:, :3, 3] = -g.source_to_isocentre_mm * e_d
  poses = torch.as_tensor(poses, dtype=torch.float32)
  subset = (np.linspace(0, len(theta), views_timed, endpoint=False).astype(int)
            if 0 < views_timed < len(theta) else np.arange(len(theta)))
  poses = poses[subset]
  setup = time.perf_counter() - start

  def fn():
    # Siddon keeps every plane crossing of every ray in memory (3 (n + 1) per ray),
    # so views are rendered a few at a time.
    with torch.no_grad():
      parts = [drr(RigidTransform(poses[i:i + views_per_call]))[:, 0]
               for i in range(0, len(poses), views_per_call)]
    return torch.cat(parts).numpy()

  result, images = time_calls(fn, repeats)
  result['error'] = relative_l2(images, case.exact[subset])
  scale = len(theta) / len(subset)
  result['views_rendered'] = len(subset)
  for k in ('seconds', 'seconds_min', 'first_call_seconds'):
    result[k + '_measured'] = result[k]
    result[k] *= scale  # the whole scan's time
  result['setup_seconds'] = setup
  result['config'] = {
      'class': 'diffdrr.drr.DRR', 'renderer': renderer, 'views_per_call': views_per_call,
      'torch_threads': torch.get_num_threads(), 'dtype': 'float32',
      'sdd_mm': g.source_to_detector_mm, 'delx_mm': g.pixel_pitch_mm,
      'reverse_x_axis': True, 'voxel_shift': 0.5, 'reorient': 'identity',
      'pose': 'rotation columns (-e_u, e_z, e_d), translation = source',
      'volume': 'attenuation as density (no HU transform), torchio (x, y, z) layout',
      'timed': 'drr(pose) only; the DRR module holds the volume (setup_seconds)'}
  return result


def bench_mbirjax(case: Case, repeats: int) -> dict:
  """mbirjax's ConeBeamModel.forward_project with our geometry."""
  import jax  # pylint: disable=g-import-not-at-top
  import mbirjax
  g = case.geometry
  nz, ny, nx = case.volume.shape
  start = time.perf_counter()
  # mbirjax per view: source at +source_iso_dist along its rotated y, channels along its
  # rotated x, rows growing with its z ("z points down"); its voxel (i, j, k) sits at
  # (x, y, z) = (j, -i, -k) in our frame when its angle equals our theta. So rows run
  # along -y, slices along -z: flip those two axes and move z last.
  recon = np.ascontiguousarray(case.volume[::-1, ::-1, :].transpose(1, 2, 0))
  model = mbirjax.ConeBeamModel(
      (len(case.angles_deg), g.detector_rows, g.detector_cols),
      np.deg2rad(case.angles_deg), source_detector_dist=g.source_to_detector_mm,
      source_iso_dist=g.source_to_isocentre_mm)
  # use_ror_mask=False: project the whole cube as the others do (the default skips the
  # voxels outside the cylinder inscribed in the rows x columns square).
  model.set_params(delta_det_channel=g.pixel_pitch_mm, delta_det_row=g.pixel_pitch_mm,
                   recon_shape=(ny, nx, nz), delta_voxel=case.voxel_mm,
                   use_ror_mask=False, verbose=0)
  setup = time.perf_counter() - start
  result, images = time_calls(lambda: np.asarray(model.forward_project(recon)), repeats)
  result['error'] = relative_l2(images, case.exact)
  result['setup_seconds'] = setup
  result['config'] = {
      'class': 'mbirjax.ConeBeamModel', 'use_ror_mask': False,
      'use_curved_detector': False, 'jax_devices': len(jax.devices()),
      'source_detector_dist': g.source_to_detector_mm,
      'source_iso_dist': g.source_to_isocentre_mm, 'delta_det_mm': g.pixel_pitch_mm,
      'delta_voxel_mm': case.voxel_mm, 'angles': 'our theta in radians',
      'volume': '(y, x, z) with y and z reversed: vol[::-1, ::-1, :].transpose(1, 2, 0)',
      'timed': 'forward_project(volume) -> numpy'}
  return result


def import_peers(names: list[str]) -> dict[str, str]:
  """Imports each peer; returns {name: why it was skipped} for those that failed.

  mbirjax goes first: on import it sets XLA_FLAGS to expose one virtual CPU device per
  core (at most 2), which works only before JAX starts, so JAX-based code (ours too)
  runs with those devices in a process that benchmarks mbirjax.
  """
  skipped = {}
  for name in sorted(names, key=lambda n: n != 'mbirjax'):
    try:
      if name == 'mbirjax':
        import mbirjax  # pylint: disable=g-import-not-at-top,unused-import
      else:
        # The projection path: no torchvision, kornia or pyvista (see benchmarks/README.md).
        import diffdrr.drr  # pylint: disable=g-import-not-at-top,unused-import
    except Exception as e:  # pylint: disable=broad-except
      skipped[name] = f'{type(e).__name__}: {e}'.splitlines()[0]
  return skipped


def versions() -> dict[str, str]:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {'python': platform.python_version()}
  for dist in ('jax', 'jaxlib', 'numpy', 'torch', 'torchio', 'diffdrr', 'mbirjax'):
    try:
      out[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      pass
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=256,
                      help='Volume edge in voxels (256 mm wide) and detector edge in pixels.')
  parser.add_argument('--views', type=int, default=60, help='Views over 360 degrees.')
  parser.add_argument('--repeats', type=int, default=3, help='Timed calls after warm-up.')
  parser.add_argument('--peers', default=','.join(PEERS),
                      help='Comma-separated subset of ' + ','.join(PEERS))
  parser.add_argument('--diffdrr-renderer', default='siddon', choices=('siddon', 'trilinear'))
  parser.add_argument('--diffdrr-views-per-call', type=int, default=1,
                      help='Views per DRR call (memory: ~2 GB per view at size 256).')
  parser.add_argument('--diffdrr-views', type=int, default=0,
                      help='Render only this many evenly spaced views with DiffDRR and '
                      'scale its time to the scan (0 = all).')
  args = parser.parse_args(argv)
  names = [n for n in args.peers.split(',') if n]
  unknown = sorted(set(names) - set(PEERS))
  if unknown or args.size < 2 or args.views < 1 or args.repeats < 1:
    parser.error(f'need --size >= 2, --views >= 1, --repeats >= 1 and peers among '
                 f'{PEERS}; got size {args.size}, views {args.views}, repeats '
                 f'{args.repeats}, unknown peers {unknown}')
  skipped = import_peers(names)
  import jax  # pylint: disable=g-import-not-at-top  (after mbirjax, see import_peers)
  # mbirjax turns on JAX's persistent compilation cache (~/.mbirjax/jax_cache), which
  # would make first calls, ours included, depend on earlier runs: off for everyone.
  jax.config.update('jax_enable_compilation_cache', False)

  print(f'building the {args.size}^3 volume and the exact integrals', file=sys.stderr)
  case = make_case(args.size, args.views)
  results = {'size': args.size, 'views': args.views, 'repeats': args.repeats,
             'voxel_mm': case.voxel_mm, 'detector': [case.geometry.detector_rows,
                                                     case.geometry.detector_cols],
             'pixel_pitch_mm': case.geometry.pixel_pitch_mm, 'versions': versions(),
             'platform': jax.default_backend(), 'jax_devices': len(jax.devices()),
             'jax_compilation_cache': False,
             'cpu_count': os.cpu_count()}
  print('timing ours', file=sys.stderr)
  results['ours'] = bench_ours(case, args.repeats)
  ratios = {}
  for name in names:
    if name in skipped:
      print(f'skipping {name}: {skipped[name]}', file=sys.stderr)
      results[name] = {'skipped': skipped[name]}
      continue
    print(f'timing {name}', file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # Keep stdout for the JSON alone.
      if name == 'diffdrr':
        results[name] = bench_diffdrr(case, args.repeats, args.diffdrr_renderer,
                                      args.diffdrr_views_per_call, args.diffdrr_views)
      else:
        results[name] = bench_mbirjax(case, args.repeats)
    ratios[f'{name}_seconds/our_seconds'] = (results[name]['seconds']
                                             / results['ours']['seconds'])
  results['ratios'] = ratios
  results['load_average_1min'] = os.getloadavg()[0]

  def rounded(x):
    if isinstance(x, dict):
      return {k: rounded(v) for k, v in x.items()}
    return float(f'{x:.4g}') if isinstance(x, float) else x
  print(json.dumps(rounded(results), indent=1))


if __name__ == '__main__':
  main()
