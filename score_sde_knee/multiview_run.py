"""All views of a leg sampled as projections of one volume (`--mode=sample --views=all`).

    python main.py --mode=sample --workdir=runs/ctm_cb --views=all --masks=test:phantom_0010 \
        --out=legs/ [--sampler=fast] [--seed=0] [--num_samples=K]
    python main.py --mode=sample --workdir=runs/ctm_cb --views=all --masks=test --out=legs/
    python main.py --mode=sample --workdir=runs/ctm_cb --views=all --masks=leg.nii.gz --out=legs/

Masks (--masks): `test:<patient>` one patient of the test split of the run's data set (its
views sorted by angle), `test` every test patient (sorted by name), or a label volume
(.nii, .nii.gz, .mha, .mhd), projected into the masks of the knee_drr orbit (60 views,
6 degrees apart; `num_views` sets another count) by score_sde_knee/multiview_masks.py. A
CTM or CSM run only: a U-Net has no sampler to make consistent (multiview.sample_leg).

Each leg is drawn twice with the same keys: `independent` (the paper's way, each view on
its own) and `consistent` (multiview.py's consistency step). Outputs in out/<patient>/:
  views/<set>_v<ii>_<angle>.png  16-bit grayscale, round(x * 65535)
  views/<set>.npy                (V, H, W, 1) float32 in [0, 1]; views/masks.npy the masks
  volume_<set>.nii.gz            the volume reconstructed from the set's views (30 CGLS
                                 iterations from 0, never clipped) in the images' units
                                 v = mu / c (multiview.py), axes and spacing as ct_io.write_ct
  volume_<set>_hu.nii.gz         the same in HU, where c is known (below)
  figure.png                     a few views per set, then mid slices of each volume
  manifest.json                  settings, seeds, files, consistency_error per set
                                 (multiview.consistency_error), seconds (the leg's, the
                                 first leg's with compilation), done
The reconstruction grid is multiview.volume_grid's 64^3 (n^3 for images of n < 64 px).
Sets: independent, consistent (draw k > 0 of --num_samples: independent_s<k>, ...), and
for a test patient `truth`, the data set's DRRs. Draw k uses PRNGKey(seed + k) for every
leg, so a leg's outputs depend on (checkpoint, masks, seed, sampler) only.

c: the data set stores the DRRs divided by an unrecorded per-patient constant, so for a
test patient c is fitted such that the median voxel of soft tissue in the truth's volume
(inside the visual hull of the body, outside that of the bone) reads as water, mu =
drr.MU_WATER_PER_MM; the one c applies to every set of that leg. A label volume's c is
unknown: no HU volumes. A leg whose manifest says done is skipped (an interrupted run
resumes leg by leg); one done with other settings is an error.
"""
import dataclasses
import functools
import json
import os
import re
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from score_sde_knee import evaluate
from score_sde_knee import input_pipeline
from score_sde_knee import methods
from score_sde_knee import model_utils
from score_sde_knee import multiview
from score_sde_knee import multiview_figure
from score_sde_knee import parallel
from score_sde_knee import sampler_setting
from score_sde_knee.sampler_setting import SamplerSettings
from score_sde_knee.utils import files
from score_sde_knee.utils import progress
from score_sde_knee.xray import drr
from score_sde_knee.xray import geometry as geometry_lib

MANIFEST = 'manifest.json'
LABEL_SUFFIXES = ('.nii.gz', '.nii', '.mha', '.mhd')
RECON_ITERS = 30  # CGLS iterations of the written volumes (and of consistency_error's).
CONSISTENCY = dict(n_iters=3, every=1, start=0, weight=1.0)  # multiview.Consistency's step


@dataclasses.dataclass(frozen=True)
class Leg:
  patient: str                 # output folder name
  source: str                  # 'test:<patient>' or the label volume's absolute path
  angles_deg: np.ndarray       # (V,) in the views' order
  masks: np.ndarray            # (V, H, W, 1) float32, the model's condition
  contour_bone: np.ndarray     # (V, H, W, 1) float32 {0, 0.5, 1}: the hulls for c
  truth: np.ndarray | None     # (V, H, W, 1) float32 the data set's DRRs, if known


# --- Masks -------------------------------------------------------------------------------


def parse_masks(spec: str | None) -> tuple[str, str | None]:
  """('test', None) | ('test', patient) | ('file', path) for --masks (module docstring)."""
  if spec == 'test':
    return 'test', None
  if spec and spec.startswith('test:') and spec[5:].strip():
    return 'test', spec[5:].strip()
  if spec and spec.lower().endswith(LABEL_SUFFIXES):
    if not os.path.isfile(spec):
      raise FileNotFoundError(f'--masks={spec}: no such label volume file')
    return 'file', spec
  raise ValueError(f'--masks={spec!r} with --views=all: expected "test" (every test '
                   'patient), "test:<patient>", or a label volume file ending in '
                   f'{", ".join(LABEL_SUFFIXES)}; per-view mask files and folders are for '
                   '--mode=sample without --views.')


def test_legs(config: ml_collections.ConfigDict, condition: str,
              patient: str | None) -> list[Leg]:
  """The test split's legs (all, or `patient`'s), each leg's views sorted by angle."""
  data = input_pipeline.load_split(config, 'test', 0, view_stride=1)
  ids = sorted(set(data['patient_id'].tolist()))
  if patient is not None and patient not in ids:
    raise ValueError(f'--masks=test:{patient}: no such patient in the test split of '
                     f'{config.data.name}/{config.data.builder_config}; the test patients '
                     f'are {", ".join(ids)}')
  legs = []
  for pid in [patient] if patient is not None else ids:
    idx = np.flatnonzero(data['patient_id'] == pid)
    idx = idx[np.argsort(data['angle_deg'][idx], kind='stable')]
    legs.append(Leg(pid, f'test:{pid}', data['angle_deg'][idx].astype(np.float64),
                    data[condition][idx], data['contour_bone'][idx], data['image'][idx]))
  return legs


def label_leg(path: str, condition: str, geometry: geometry_lib.ConeBeamGeometry,
              angles_deg: np.ndarray) -> Leg:
  """The masks of a label volume in the scan (multiview_masks), checked for consistency."""
  try:
    from score_sde_knee import multiview_masks  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as e:
    raise ValueError(f'--masks={path}: reading a label volume needs '
                     f'score_sde_knee/multiview_masks.py ({e})') from None
  try:
    labels, spacing = multiview_masks.read_label_volume(path)
    masks = multiview_masks.masks_from_label_volume(labels, spacing, geometry, angles_deg)
    check = getattr(multiview_masks, 'check_consistent', None)
    if check is not None:  # views that are no one body's would mislead the sampler
      check(np.asarray(masks[condition]), geometry, angles_deg)
  except ValueError as e:
    raise ValueError(str(e) if path in str(e) else f'--masks={path}: {e}') from None
  name = os.path.basename(path)
  stem = name[:-len(next(s for s in LABEL_SUFFIXES if name.lower().endswith(s)))]
  f32 = lambda key: np.asarray(masks[key], np.float32)
  return Leg(re.sub(r'[^A-Za-z0-9._-]', '_', stem) or 'leg', os.path.abspath(path),
             np.asarray(masks['angles_deg'], np.float64), f32(condition),
             f32('contour_bone'), None)


# --- Volumes -----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=1)
def reconstruct(views: jax.Array, consistency: multiview.Consistency):
  """(volume, consistency error) of (V, H, W, 1) views: multiview.least_squares."""
  return multiview.least_squares(views, consistency, RECON_ITERS)


def visual_hull(masks: np.ndarray, consistency: multiview.Consistency) -> np.ndarray:
  """(z, y, x) bool: voxels whose centre falls inside the mask ((V, H, W) bool) in every
  view; a centre off a detector counts as outside."""
  c = consistency
  axes = [(np.arange(n) - (n - 1) / 2) * h for n, h in zip(c.volume_shape, c.spacing_mm)]
  z, y, x = np.meshgrid(*axes, indexing='ij')
  points = np.stack([x, y, z], axis=-1).reshape(-1, 3)
  inside = np.ones(len(points), bool)
  rows, cols = masks.shape[1:3]
  for mask, angle in zip(masks, c.angles_deg):
    rc = np.round(c.geometry.project_points(points, angle)).astype(np.int64)
    ok = (rc[:, 0] >= 0) & (rc[:, 0] < rows) & (rc[:, 1] >= 0) & (rc[:, 1] < cols)
    inside &= ok
    inside[ok] &= mask[rc[ok, 0], rc[ok, 1]]
  return inside.reshape(c.volume_shape)


def fit_scale(volume: np.ndarray, contour_bone: np.ndarray,
              consistency: multiview.Consistency) -> tuple[float | None, str]:
  """(c, how) such that c * median(soft tissue of `volume`) = mu_water; (None, why) if
  there is no soft tissue to fit on."""
  cb = contour_bone[..., 0]
  soft = visual_hull(cb > 0.25, consistency) & ~visual_hull(cb > 0.75, consistency)
  if not soft.any():
    return None, 'no voxel lies inside the body hull and outside the bone hull'
  median = float(np.median(volume[soft]))
  if median <= 0:
    return None, f'the soft-tissue median of the truth volume is {median:.3g} <= 0'
  return drr.MU_WATER_PER_MM / median, (
      f'fitted: the median of the {int(soft.sum())} soft-tissue voxels (inside the body\'s '
      f'visual hull, outside the bone\'s) of the truth volume reads as water, mu = '
      f'{drr.MU_WATER_PER_MM}/mm')


def to_hu(volume: np.ndarray, c: float) -> np.ndarray:
  """HU of v = mu / c: 1000 (c v / mu_water - 1)."""
  return (1000.0 * (c * volume / drr.MU_WATER_PER_MM - 1.0)).astype(np.float32)


# --- Writing -----------------------------------------------------------------------------


def angle_tag(angle: float) -> str:
  return f'{round(angle):03d}' if abs(angle - round(angle)) < 1e-3 else f'{angle:07.3f}'


def write_views(folder: str, name: str, views: np.ndarray, angles_deg) -> list[str]:
  """views/<name>.npy and one 16-bit PNG per view; returns the paths relative to folder."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  written = [os.path.join('views', f'{name}.npy')]
  files.write_npy(os.path.join(folder, written[0]), views.astype(np.float32))
  for i, (view, angle) in enumerate(zip(views, angles_deg)):
    rel = os.path.join('views', f'{name}_v{i:02d}_{angle_tag(float(angle))}.png')
    u16 = np.round(np.clip(view[..., 0], 0, 1).astype(np.float64) * 65535).astype(np.uint16)
    with files.atomic_path(os.path.join(folder, rel), '.png') as tmp:
      Image.fromarray(u16).save(tmp, format='PNG')
    written.append(rel)
  return written


def read_manifest(folder: str) -> dict[str, Any] | None:
  path = os.path.join(folder, MANIFEST)
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON ({e}); delete it to redo the leg') from None


# --- Running -----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str, *, masks: str | None,
        out: str | None, num_samples: int = 1, seed: int = 0, sampler: str | None = None,
        grid: int | None = None, num_views: int | None = None, snap: bool = False,
        resize: bool = False, tfds_dir: str | None = None) -> list[dict[str, Any]]:
  """Samples each leg of --masks into out/<patient>/ (module docstring); returns the legs'
  manifests. grid: the reconstruction grid's n^3 (multiview.volume_grid), by default 64
  or the image size if smaller (no finer than the detector: the views would leave voxel
  planes between their rows unseen)."""
  if not masks or not out:
    raise ValueError('--views=all needs --masks=test|test:<patient>|<label volume> and '
                     '--out=FOLDER')
  for flag, value in (('--snap', snap), ('--resize', resize), ('--export_tfds', tfds_dir)):
    if value:
      raise ValueError(f'{flag} applies to per-view masks; --views=all takes none of it')
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f'--num_samples must be an integer >= 1, got {num_samples!r}')
  if methods.get(config.method).sampling == 'forward':
    raise ValueError(f'--views=all samples a leg\'s views jointly in a score model\'s '
                     f'sampler; {workdir} is a {config.method} run (one forward pass, no '
                     'sampler to make consistent). Use a CTM or CSM run.')
  condition = evaluate.eval_condition(config)
  if sampler:
    config, _ = sampler_setting.apply(config, sampler, condition)
  settings = SamplerSettings.from_config(config)
  if settings.solver != 'pc':
    raise ValueError(f'--views=all: the consistency step runs in the PC sampler, not '
                     f'{settings.solver}; pass --sampler=fast or a pc:N setting.')
  kind, arg = parse_masks(masks)
  size = int(config.data.image_size)
  grid = min(64, size) if grid is None else grid
  geometry = geometry_lib.ConeBeamGeometry().with_detector(size)
  if kind == 'file':
    n = num_views or geometry.num_views
    legs = [label_leg(arg, condition, geometry, np.arange(n) * (360.0 / n))]
  else:
    legs = test_legs(config, condition, arg)

  params, step = evaluate.restore_ema_params(config, workdir, parallel.make_mesh())
  sample = multiview.leg_sampler(config, model_utils.create_model(config))

  common = {'workdir': os.path.abspath(workdir), 'checkpoint_step': step,
            'method': config.method, 'condition': condition, 'image_size': size,
            'seed': int(seed),
            'sampler': {k: v for k, v in evaluate.sampler_settings(config).items()
                        if k != 'seed'},  # config.seed: not what draws the legs
            'num_samples': num_samples, 'grid': grid,
            'consistency': dict(CONSISTENCY), 'reconstruction_iters': RECON_ITERS}
  common = files_json(common)
  manifests, todo = [], []
  for leg in legs:
    old = read_manifest(os.path.join(out, leg.patient))
    if old and old.get('done'):
      if old.get('settings') != common or old.get('mask_source') != leg.source:
        raise ValueError(f'{os.path.join(out, leg.patient)} holds a leg made with other '
                         'settings (see its manifest.json); use another --out or delete it')
      print(f'{leg.patient}: done already, skipped', flush=True)
      manifests.append(old)
    else:
      todo.append(leg)
  bar = progress.Progress(len(legs), f'multiview {config.method}/{condition}', unit='leg',
                          done=len(legs) - len(todo), every=0.0)
  for leg in todo:
    manifests.append(run_leg(leg, os.path.join(out, leg.patient), common, geometry,
                             lambda cond, key, c: sample(params, cond, key, c)))
    bar.update()
  return manifests


def files_json(obj):
  """obj in plain JSON types (tuples -> lists), as a manifest reads back."""
  return json.loads(json.dumps(obj))


def run_leg(leg: Leg, folder: str, common: dict[str, Any],
            geometry: geometry_lib.ConeBeamGeometry, sample) -> dict[str, Any]:
  """Samples, reconstructs and writes one leg; the manifest, written last, says done."""
  begin = time.time()
  consistency = multiview.for_geometry(geometry, common['grid'], leg.angles_deg,
                                       **CONSISTENCY)
  multiview.check_views(leg.masks, consistency, 'masks')
  views, seeds = {}, {}
  for k in range(common['num_samples']):
    key = jax.random.PRNGKey(common['seed'] + k)
    for base, c in (('independent', None), ('consistent', consistency)):
      name = base if k == 0 else f'{base}_s{k}'
      views[name] = np.asarray(sample(leg.masks, key, c), np.float32)
      seeds[name] = common['seed'] + k
  if leg.truth is not None:
    views['truth'] = np.asarray(leg.truth, np.float32)
  written = [os.path.join('views', 'masks.npy')]
  files.write_npy(os.path.join(folder, written[0]), leg.masks.astype(np.float32))
  volumes, errors = {}, {}
  for name, v in views.items():
    volume, error = reconstruct(v, consistency)
    volumes[name], errors[name] = np.asarray(volume), float(error)
    written += write_views(folder, name, v, leg.angles_deg)
  c, how = None, 'unknown: no true DRRs to fit it on, so no HU volumes'
  if 'truth' in volumes:
    c, how = fit_scale(volumes['truth'], leg.contour_bone, consistency)
  from score_sde_knee.xray import ct_io  # pylint: disable=g-import-not-at-top
  for name, volume in volumes.items():
    outputs = [(f'volume_{name}.nii.gz', volume)]
    if c is not None:
      outputs.append((f'volume_{name}_hu.nii.gz', to_hu(volume, c)))
    for rel, array in outputs:
      ct_io.write_ct(os.path.join(folder, rel), array, consistency.spacing_mm)
      written.append(rel)
  shown = [n for n in ('independent', 'consistent', 'truth') if n in views]
  multiview_figure.save(os.path.join(folder, 'figure.png'), {n: views[n] for n in shown},
                        leg.angles_deg, {n: volumes[n] for n in shown},
                        consistency.spacing_mm,
                        title=f'{leg.patient}: consistency error ' + ', '.join(
                            f'{n} {errors[n]:.3g}' for n in shown))
  written.append('figure.png')
  manifest = files_json({
      'settings': common, 'patient': leg.patient, 'mask_source': leg.source,
      'angles_deg': [float(a) for a in leg.angles_deg],
      'seeds': seeds,
      'volume': {'shape': consistency.volume_shape, 'spacing_mm': consistency.spacing_mm,
                 'units': 'v = mu / c (1/mm over the normalisation constant c)'},
      'c': c, 'c_source': how, 'consistency_error': errors, 'files': sorted(written),
      'seconds': time.time() - begin, 'done': True})
  files.write_json(os.path.join(folder, MANIFEST), manifest)
  return manifest
