"""Synthetic radiographs from segmentation masks (`--mode=sample`), and their TFDS export.

    python main.py --mode=sample --workdir=runs/ctm_cb --masks=masks/ --out=synthetic/ \
        --num_samples=4 --seed=0 [--resize] [--snap] [--export_tfds=synthetic_tfds/]
    python main.py --mode=sample --workdir=runs/ctm_cb --masks=test --out=synthetic_test/
    python main.py --mode=sample --workdir=runs/ctm_cb --masks=masks/ --out=fast/ --sampler=fast

Masks (--masks): a PNG (8-bit grayscale: value / 255; 16-bit: value / 65535), an NPY
((H, W) or (H, W, 1) numbers, used as they are), a folder of them (sorted by name, other
files ignored), or 'test': the condition masks of the data set's config.eval.split (the
first config.eval.num_images, 0 = all), as evaluation sees them. File masks must hold
the labels 0 (background), 0.5 (body), 1 (bone), within 0.005 (8-bit PNGs store 0.5 as
127 or 128); a contour model (ctm, unet) takes {0, 0.5} only; the size must be
config.data.image_size. Options:
  snap=True (--snap)      round every value to the nearest label the model takes
                          ({0, 0.5} for a contour model: a contour_bone mask becomes its
                          contour; {0, 0.5, 1} otherwise).
  resize=True (--resize)  resize masks of another size to image_size x image_size with
                          nearest neighbours, so labels stay labels.
  sampler='fast'          the 49-evaluation sampler of benchmarks/RESULTS.md instead of
  (--sampler=fast)        the config's (PC N = 500: 999), 'fast-air' the same with the
                          air outside the mask held but for a 1-2 px ring per condition
                          (CSM's best), 'paper' (PC N = 500), or any setting such as pc:100
                          (score_sde_knee/sampler_setting.py).
Outputs in `out`, for mask <name> (its file stem, or test_<index>) and sample k:
  <name>_s<k>.png   16-bit grayscale PNG, round(x * 65535)
  <name>_s<k>.npy   float32 (H, W, 1) in [0, 1]
  masks/<name>.npy  the mask the model got, float32 (H, W, 1)
  manifest.json     'settings' and one entry per output (mask, sample, seed, files)
  overview.png      a look at the outputs: up to 8 masks (evenly spaced, first and last
                    included), each with up to 4 of its samples
Sample k of the i-th mask is sample(mask, PRNGKey(seed + i * num_samples + k)), each
drawn on its own (vmapped; the PC corrector's step size is that sample's own), so an
output depends on (checkpoint, mask, seed, sampler settings) only, not on its batch.
Outputs already on disk are skipped: an interrupted run resumes. An `out` whose
manifest has other settings (checkpoint, masks, seed, ...) is an error.

`export_tfds(out, tfds_dir)` (--export_tfds) stores the outputs as the TFDS data set
knee_drr_synthetic (one 'train' split) with knee_drr's features: image = the sample,
contour_bone = the mask, contour = 0.5 * (mask > 0), patient_id = the test image's
patient (masks=test) or the mask's name, angle_deg = the test image's angle or NaN.
It needs contour_bone masks (a contour_bone model, or csm with condition contour_bone):
a contour mask says nothing of the bone, so contour_bone would be unknown. Open it with
`tfds.builder_from_directory(<tfds_dir>/knee_drr_synthetic/1.0.0)`.
"""
import dataclasses
import importlib.util
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from score_sde_knee import evaluate
from score_sde_knee.utils import files
from score_sde_knee import input_pipeline
from score_sde_knee import methods
from score_sde_knee import parallel
from score_sde_knee.utils import progress
from score_sde_knee import report
from score_sde_knee import sampler_setting
from score_sde_knee.utils import plots

MANIFEST = 'manifest.json'
MASK_SUFFIXES = ('.png', '.npy')
SYNTHETIC_NAME = 'knee_drr_synthetic'
_TOL = 0.005


class MaskError(ValueError):
  """A mask file that is not a valid segmentation for the model."""


@dataclasses.dataclass(frozen=True)
class Mask:
  name: str             # output stem
  source: str           # file path, or 'test:<index>'
  array: np.ndarray     # (S, S, 1) float32
  patient_id: str
  angle_deg: float | None


# --- Masks -------------------------------------------------------------------------------


def read_mask_file(path: str) -> np.ndarray:
  """A mask file as (H, W) float64: PNG values / 255 (8 bit) or / 65535 (16 bit); NPY raw."""
  ext = os.path.splitext(path)[1].lower()
  if ext == '.png':
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with Image.open(path) as im:
      mode = im.mode
      if mode in ('L', '1'):
        return np.asarray(im.convert('L'), np.float64) / 255.0
      if mode.startswith('I;16') or mode == 'I':  # 'I': how some Pillows open 16 bit
        return np.asarray(im, np.float64) / 65535.0
    raise MaskError(f'{path}: expected an 8-bit or 16-bit grayscale PNG, got PIL mode '
                    f'{mode!r}; save the mask as grayscale.')
  if ext == '.npy':
    try:
      a = np.load(path, allow_pickle=False)
    except ValueError as e:
      raise MaskError(f'{path}: not a plain numeric .npy ({e})') from None
    if a.dtype.kind not in 'biuf':
      raise MaskError(f'{path}: expected a numeric array, got dtype {a.dtype}')
    if a.ndim == 3 and a.shape[-1] == 1:
      a = a[..., 0]
    if a.ndim != 2:
      raise MaskError(f'{path}: expected shape (H, W) or (H, W, 1), got {a.shape}')
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
      raise MaskError(f'{path}: holds NaN or Inf values')
    return a
  raise MaskError(f'{path}: expected a .png or .npy mask, got {ext or "no extension"!r}')


def prepare_mask(mask: np.ndarray, source: str, *, size: int, labels: tuple[float, ...],
                 snap: bool = False, resize: bool = False) -> np.ndarray:
  """Checks (or snaps) the labels and the size; returns (size, size, 1) float32."""
  labels_arr = np.asarray(labels)
  nearest = labels_arr[np.argmin(np.abs(mask[..., None] - labels_arr), axis=-1)]
  if not snap:
    off = np.abs(mask - nearest) > _TOL
    if 1.0 not in labels and (np.abs(mask - 1.0) <= _TOL).any():
      raise MaskError(
          f'{source}: has bone labels (1.0), but the model was trained on contour masks '
          f'(values {{0, 0.5}}). Use a contour_bone model, or pass --snap to turn the mask '
          f'into its contour.')
    if off.any():
      bad = np.unique(mask[off])
      shown = ', '.join(f'{v:.4g}' for v in bad[:8]) + (', ...' if len(bad) > 8 else '')
      raise MaskError(
          f'{source}: values other than the labels {set(labels)} found ({shown}; '
          f'{off.sum()} pixels). Pass --snap to round them to the nearest label.')
  mask = nearest
  if mask.shape != (size, size):
    if not resize:
      raise MaskError(f'{source}: mask is {mask.shape[0]}x{mask.shape[1]}, the model takes '
                      f'{size}x{size}. Pass --resize (nearest neighbour) or resize it.')
    rows = np.minimum(((np.arange(size) + 0.5) * mask.shape[0] / size).astype(int),
                      mask.shape[0] - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * mask.shape[1] / size).astype(int),
                      mask.shape[1] - 1)
    mask = mask[rows][:, cols]
  return mask.astype(np.float32)[..., None]


def model_labels(config: ml_collections.ConfigDict) -> tuple[float, ...]:
  """Labels a mask may hold: a contour model knows no bone; csm starts from any mask."""
  if 'contour_bone' not in methods.get(config.method).conditions(config.condition):
    return (0.0, 0.5)
  return (0.0, 0.5, 1.0)


def load_masks(spec: str, config: ml_collections.ConfigDict, *, snap: bool = False,
               resize: bool = False) -> list[Mask]:
  """The masks named by --masks (see the module docstring), in a fixed order."""
  size = int(config.data.image_size)
  if spec == 'test':
    condition = evaluate.eval_condition(config)
    data = input_pipeline.load_split(config, config.eval.split, int(config.eval.num_images))
    return [Mask(f'test_{i:05d}', f'test:{i}', data[condition][i],
                 str(data['patient_id'][i]), float(data['angle_deg'][i]))
            for i in range(len(data[condition]))]
  if os.path.isdir(spec):
    paths = sorted(os.path.join(spec, f) for f in os.listdir(spec)
                   if f.lower().endswith(MASK_SUFFIXES) and not f.startswith('.'))
    if not paths:
      raise MaskError(f'--masks={spec}: the folder holds no .png or .npy file')
  elif os.path.isfile(spec):
    paths = [spec]
  else:
    raise FileNotFoundError(f'--masks={spec}: no such file or folder (or pass "test")')
  masks, seen = [], {}
  for path in paths:
    name = os.path.splitext(os.path.basename(path))[0]
    if name in seen:
      raise MaskError(f'{path} and {seen[name]} would write the same outputs ({name}_s*)')
    seen[name] = path
    array = prepare_mask(read_mask_file(path), path, size=size, labels=model_labels(config),
                         snap=snap, resize=resize)
    masks.append(Mask(name, os.path.abspath(path), array, name, None))
  return masks


# --- Sampling ----------------------------------------------------------------------------


def generate(config: ml_collections.ConfigDict, workdir: str, *, masks: str, out: str,
             num_samples: int = 1, seed: int = 0, snap: bool = False,
             resize: bool = False, tfds_dir: str | None = None,
             sampler: str | None = None) -> dict[str, Any]:
  """Samples num_samples radiographs per mask into `out`; returns the manifest.

  tfds_dir: if given, the outputs are then exported there (`export_tfds`).
  sampler: a preset (paper, fast, fast-air) or a setting `solver:n[:name=value,...]` instead
    of the config's sampler; the manifest records it, so `out` holds one sampler's images.
  """
  if not masks or not out:
    raise ValueError('--mode=sample needs --masks=FILE|FOLDER|test and --out=FOLDER')
  if num_samples < 1:
    raise ValueError(f'--num_samples must be >= 1, got {num_samples}')
  condition = evaluate.eval_condition(config)
  if sampler:
    config, _ = sampler_setting.apply(config, sampler, condition)
  if tfds_dir and condition != 'contour_bone':
    raise ValueError(
        f'--export_tfds needs contour_bone masks, but this {config.method} model uses '
        f'{condition!r} (a contour mask says nothing of the bone). Use a contour_bone '
        'model' + ('' if methods.get(config.method).cond_input
                   else ', or --condition=contour_bone') + '.')
  if tfds_dir and importlib.util.find_spec('tensorflow') is None:
    # Writing a TFDS data set serializes tf.train.Example protos; reading it back does not.
    raise ValueError('--export_tfds writes a TFDS data set, which needs TensorFlow '
                     '(pip install the tensorflow-cpu of requirements.txt); sampling '
                     'alone does not: drop --export_tfds, or install it.')
  batch_size = int(config.eval.batch_size)
  if batch_size <= 0 or batch_size % jax.device_count():
    raise ValueError(f'config.eval.batch_size={batch_size} must be a positive multiple of '
                     f'the number of devices {jax.device_count()}.')
  mesh = parallel.make_mesh()
  params, step = evaluate.restore_ema_params(config, workdir, mesh)
  mask_list = load_masks(masks, config, snap=snap, resize=resize)
  settings = {'workdir': os.path.abspath(workdir), 'method': config.method,
              'condition': condition, 'checkpoint_step': step, 'seed': int(seed),
              'num_samples': int(num_samples), 'image_size': int(config.data.image_size),
              'sampler': {k: v for k, v in evaluate.sampler_settings(config).items()
                          if k != 'seed'},
              'masks': [m.source for m in mask_list]}
  _check_manifest(out, settings)
  writer = jax.process_index() == 0
  for m in mask_list if writer else ():
    files.write_npy(os.path.join(out, 'masks', f'{m.name}.npy'), m.array)

  entries = [_entry(m, i, k, seed, num_samples) for i, m in enumerate(mask_list)
             for k in range(num_samples)]
  is_done = lambda e: all(os.path.exists(os.path.join(out, e[f])) for f in ('png', 'npy'))
  todo = [j for j, e in enumerate(entries) if not is_done(e)]
  write_manifest = lambda: files.write_json(
      os.path.join(out, MANIFEST),
      {'settings': settings, 'outputs': [e for e in entries if is_done(e)]})
  if writer:
    write_manifest()  # before any output: the settings of what `out` holds
  bar = progress.Progress(len(entries), f'sample {config.method}/{condition}',
                          done=len(entries) - len(todo), unit='image',
                          quiet=jax.process_index() > 0)
  sample = evaluate.jitted_sample_fn(config, mesh, per_example=True)
  dat = parallel.data_sharding(mesh)
  for start in range(0, len(todo), batch_size):
    chunk = todo[start:start + batch_size]
    padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
    cond = np.stack([mask_list[entries[j]['mask_index']].array for j in padded])
    keys = np.stack([np.asarray(jax.random.PRNGKey(entries[j]['seed'])) for j in padded])
    x = evaluate.fetch(sample(params, evaluate.global_array(cond, dat),
                              evaluate.global_array(keys, dat)))
    if writer:
      for j, img in zip(chunk, x):
        _write_output(out, entries[j], np.clip(img, 0.0, 1.0).astype(np.float32))
      write_manifest()
    bar.update(len(chunk))
  manifest = {'settings': settings, 'outputs': entries}
  if writer:
    path = save_overview(out, entries)
    print(f'{len(entries)} radiographs in {out}; a look at them: {path}', flush=True)
  if tfds_dir and writer:
    manifest['tfds_dir'] = export_tfds(out, tfds_dir)
  return manifest


def _entry(m: Mask, i: int, k: int, seed: int, num_samples: int) -> dict[str, Any]:
  stem = f'{m.name}_s{k}'
  return {'mask': m.source, 'mask_index': i, 'name': m.name, 'sample': k,
          'seed': int(seed) + i * num_samples + k, 'png': f'{stem}.png',
          'npy': f'{stem}.npy', 'mask_npy': os.path.join('masks', f'{m.name}.npy'),
          'patient_id': m.patient_id, 'angle_deg': m.angle_deg}


def overview_rows(out: str, entries: list[dict[str, Any]], max_masks: int = 8,
                  max_samples: int = 4) -> tuple[list[list[np.ndarray]], list[str]]:
  """Rows [mask, sample 0, ...] read back from `out`, for evenly spaced masks; row titles."""
  by_mask: dict[int, list[dict[str, Any]]] = {}
  for e in entries:
    by_mask.setdefault(e['mask_index'], []).append(e)
  rows, titles = [], []
  for i in report.evenly_spaced(sorted(by_mask), max_masks):
    es = sorted(by_mask[i], key=lambda e: e['sample'])[:max_samples]
    rows.append([np.load(os.path.join(out, es[0]['mask_npy']))]
                + [np.load(os.path.join(out, e['npy'])) for e in es])
    titles.append(es[0]['name'])
  return rows, titles


def save_overview(out: str, entries: list[dict[str, Any]]) -> str:
  rows, titles = overview_rows(out, entries)
  n = max(len(r) for r in rows) - 1
  path = os.path.join(out, 'overview.png')
  plots.save_grid(path, rows, row_titles=titles,
                      col_titles=['mask'] + [f'sample {k}' for k in range(n)])
  return path


def _check_manifest(out: str, settings: dict[str, Any]) -> None:
  path = os.path.join(out, MANIFEST)
  if not os.path.exists(path):
    return
  with open(path) as f:
    try:
      old = json.load(f).get('settings')
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON ({e}).') from None
  if old != json.loads(json.dumps(settings)):
    diff = sorted(k for k in settings if old is None or old.get(k) != settings[k])
    raise ValueError(f'{out} holds outputs made with other settings ({", ".join(diff)} '
                     f'differ, see {path}); use another --out or empty it.')


def _write_output(out: str, entry: dict[str, Any], img: np.ndarray) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  files.write_npy(os.path.join(out, entry['npy']), img)
  u16 = np.round(img[..., 0].astype(np.float64) * 65535.0).astype(np.uint16)
  with files.atomic_path(os.path.join(out, entry['png']), '.png') as tmp:
    Image.fromarray(u16).save(tmp, format='PNG')


# --- TFDS export -------------------------------------------------------------------------


def knee_drr_features(size: int):
  """The features of knee_drr (datasets/knee_drr) at size x size."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  mask = lambda: tfds.features.Tensor(shape=(size, size, 1), dtype=np.float32,
                                      encoding=tfds.features.Encoding.ZLIB)
  return tfds.features.FeaturesDict({
      'image': mask(), 'contour': mask(), 'contour_bone': mask(),
      'patient_id': tfds.features.Text(), 'angle_deg': np.float32})


def export_tfds(out: str, tfds_dir: str) -> str:
  """Stores the outputs listed in out/manifest.json as knee_drr_synthetic in tfds_dir.

  Returns the data set's directory (for tfds.builder_from_directory), ArrayRecord as
  knee_drr, so that `.as_data_source('train')` (Grain, no TensorFlow) and `.as_dataset`
  both read it.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with open(os.path.join(out, MANIFEST)) as f:
    manifest = json.load(f)
  settings, entries = manifest['settings'], manifest['outputs']
  if settings['condition'] != 'contour_bone':
    raise ValueError(f'{out}: made from {settings["condition"]!r} masks; the export needs '
                     'contour_bone masks (see score_sde_knee/generate.py).')
  if not entries:
    raise ValueError(f'{out}/{MANIFEST} lists no outputs to export.')
  target = os.path.join(tfds_dir, SYNTHETIC_NAME)
  if os.path.exists(target):
    raise ValueError(f'{target} exists already; delete it or choose another --export_tfds.')

  def examples():
    for e in entries:
      mask = np.load(os.path.join(out, e['mask_npy'])).astype(np.float32)
      yield f'{e["name"]}_s{e["sample"]}', {
          'image': np.load(os.path.join(out, e['npy'])).astype(np.float32),
          'contour': np.where(mask > 0, 0.5, 0.0).astype(np.float32),
          'contour_bone': mask,
          'patient_id': e['patient_id'],
          'angle_deg': np.float32(np.nan if e['angle_deg'] is None else e['angle_deg'])}

  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name=SYNTHETIC_NAME, version='1.0.0', data_dir=tfds_dir,
      features=knee_drr_features(int(settings['image_size'])),
      split_datasets={'train': examples()}, disable_shuffling=True,
      file_format='array_record',  # as knee_drr: tfds.data_source / Grain read it
      description=(f'Synthetic knee radiographs sampled by a {settings["method"]} model '
                   f'(checkpoint step {settings["checkpoint_step"]}, seed '
                   f'{settings["seed"]}) from contour_bone masks; features as knee_drr.'))
  return os.fspath(builder.data_dir)
