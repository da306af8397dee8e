"""The segmentation benchmark's report: each regime summed up over its seeds, and how good
each synthetic set is, two ways: its draws against the radiographs of the masks they were
drawn from (where those exist), and its labels against what a segmenter trained on every
real patient sees in its images (for every set)."""
import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from benchmarks import augmentation_data as ad
from score_sde_knee import metrics
from score_sde_knee import segmenter as seg
from score_sde_knee import segmenter_data as sd
from score_sde_knee.utils import files

SEED_KEYS = ('dice_bone_mean', 'dice_bone_std', 'dice_leg_mean', 'dice_leg_std', 'num_images',
             'n_real', 'n_synthetic')


def summarize(workdir: str, seeds: int, regimes: Sequence[Any]) -> list[dict[str, Any]]:
  """One row per regime (a dataclass with name and k) from seg/<name>/seed<s>/result.json:
  dice_*_mean/std over the seeds' means, dice_*_image_std, and gap_closed."""
  rows = []
  for r in regimes:
    per_seed = []
    for seed in range(seeds):
      res = files.read_json(os.path.join(workdir, 'seg', r.name, f'seed{seed}', 'result.json'))
      per_seed.append({'seed': seed, **{k: res[k] for k in SEED_KEYS}})
    row = {**dataclasses.asdict(r), 'n_real': per_seed[0]['n_real'],
           'n_synthetic': per_seed[0]['n_synthetic'], 'seeds': per_seed}
    for m in ('dice_bone', 'dice_leg'):
      means = np.array([p[f'{m}_mean'] for p in per_seed])
      row[f'{m}_mean'], row[f'{m}_std'] = float(means.mean()), float(means.std())
      row[f'{m}_image_std'] = float(np.mean([p[f'{m}_std'] for p in per_seed]))
    rows.append(row)
  by_name = {row['name']: row for row in rows}
  for row in rows:
    base, top = by_name.get(f"real-{row['k']}"), by_name.get('ceiling')
    if row['k'] is not None and row['name'] != f"real-{row['k']}":
      gap = top['dice_bone_mean'] - base['dice_bone_mean'] if base and top else 0.0
      row['gap_closed'] = (row['dice_bone_mean'] - base['dice_bone_mean']) / gap if gap else None
  return rows


def synthetic_quality(workdir: str, gen: str, k: int, mask_indices: Sequence[int],
                      train: Any) -> dict[str, Any]:
  """How close G's draws from the other patients' masks come to those masks' own
  radiographs (never used in training): PSNR and MAE over the masks (std ddof 0)."""
  base = os.path.join(ad.synth_dir(workdir, gen, k, 'other_patients'), 'samples')
  samples = np.stack([np.load(os.path.join(base, f'm{j:05d}_s0.npy'))
                      for j in range(len(mask_indices))])
  truth = np.stack([sd.example_arrays(train[int(i)], samples.shape[1])['image']
                    for i in mask_indices])
  p, a = metrics.psnr(samples, truth), metrics.mae(samples, truth)
  return {'synthetic_psnr_mean': float(p.mean()), 'synthetic_psnr_std': float(p.std()),
          'synthetic_mae_mean': float(a.mean()), 'synthetic_mae_std': float(a.std())}


def label_agreement(workdir: str, gen: str, k: int, source: str, params: Any,
                    config: seg.SegmenterConfig, batch_size: int = 32) -> dict[str, Any]:
  """The judge segmenter (params, config) on each synthetic image, scored against the labels
  of the mask it was drawn from: bone and leg Dice over the set (std ddof 0). Labels a
  segmenter trained on real radiographs cannot find in the image teach a wrong lesson."""
  res = seg.evaluate_segmenter(
      params, config, seg.open_source(ad.synthetic_tfds(workdir, gen, k, source), 'train'),
      batch_size=batch_size)
  return {f'label_{m}_{s}': float(res[f'{m}_{s}'])
          for m in ('dice_bone', 'dice_leg') for s in ('mean', 'std')}


def score_synthetic(workdir: str, rows: list[dict[str, Any]], subsets: dict[str, Any],
                    train: Any, judge: tuple[Any, seg.SegmenterConfig] | None,
                    batch_size: int = 32) -> None:
  """Adds synthetic_* (other patients' masks) and, with a judge, label_* fields to the rows
  with synthetic images, each set scored once (regimes may share one)."""
  done: dict[tuple, dict[str, Any]] = {}
  for row in rows:
    if row['mask_source'] == 'none':
      continue
    key = (row['generator'], row['k'], row['mask_source'])
    if key not in done:
      done[key] = {}
      if row['mask_source'] == 'other_patients':
        done[key].update(synthetic_quality(workdir, row['generator'], row['k'],
                                           subsets['k'][str(row['k'])]['masks'], train))
      if judge is not None:
        done[key].update(label_agreement(workdir, *key, *judge, batch_size=batch_size))
    row.update(done[key])
