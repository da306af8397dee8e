"""The segmentation benchmark's data: patient subsets of the train split, the views taken of
each patient, deformed copies of a patient's own masks, and where a synthetic set lies."""
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from score_sde_knee import input_pipeline
from score_sde_knee import segmenter_data as sd
from score_sde_knee.utils import files


class Subset:
  """Examples `indices` of a random-access source, itself one (len, [i])."""

  def __init__(self, source: Any, indices: Sequence[int]):
    self.source, self.indices = source, [int(i) for i in indices]

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> Any:
    return self.source[self.indices[i]]


def subset_datasets(train_source: Any, val_source: Any) -> Callable[..., Any]:
  """train_and_evaluate's datasets_fn: input_pipeline's streams with `train_source` (a
  subset of the train split) for the split. One process."""
  def create(config, start_step: int = 0) -> input_pipeline.Datasets:
    if jax.process_count() != 1:
      raise ValueError(f'subset_datasets: {jax.process_count()} processes; expected 1.')
    return input_pipeline.datasets_from_sources(
        config, train_source, val_source, per_host=int(config.training.batch_size),
        start_step=start_step)
  return create


def pick_views(pids: np.ndarray, angles: np.ndarray, patients: Sequence[str],
               per_patient: int) -> list[int]:
  """Indices of `per_patient` views (0 = all) of each patient, evenly spaced by angle."""
  out = []
  for p in patients:
    idx = np.flatnonzero(pids == p)
    idx = idx[np.argsort(angles[idx], kind='stable')]
    n = len(idx) if per_patient <= 0 else min(per_patient, len(idx))
    out += sorted(int(i) for i in idx[(np.arange(n) * len(idx)) // n])
  return out


def make_subsets(source: Any, ks: Sequence[int], subset_seed: int, views_per_patient: int,
                 mask_views: int) -> dict[str, Any]:
  """The patient order (a permutation by `subset_seed`); per k the first k patients' views
  (`views_per_patient` each, 0 = all) and `mask_views` of each other patient, for masks."""
  exs = [source[i] for i in range(len(source))]
  pids = np.array([_text(ex['patient_id']) for ex in exs])
  angles = np.array([float(ex['angle_deg']) for ex in exs])
  patients = sorted(set(pids))
  order = [patients[i] for i in np.random.default_rng(subset_seed).permutation(len(patients))]
  out = {'patients': order, 'all': pick_views(pids, angles, order, views_per_patient),
         'k': {}}
  for k in ks:
    if not 1 <= k < len(order):
      raise ValueError(f'--k {k}: expected 1 <= k < {len(order)} (the train patients).')
    out['k'][str(k)] = {
        'patients': order[:k], 'real': pick_views(pids, angles, order[:k], views_per_patient),
        'masks': pick_views(pids, angles, order[k:], mask_views)}
  return out


def _text(x: Any) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


def deformed_masks(masks: Sequence[np.ndarray], n: int, seed: int) -> list[np.ndarray]:
  """n masks, the given ones in turn, each through an affine and an elastic warp."""
  out = []
  for j in range(n):
    labels = sd.labels_from_mask(masks[j % len(masks)])
    # augment() flips first, with p=1 always: flipping its input undoes that, leaving the
    # warps (nearest label for the labels). The intensity jitter only touches the dummy.
    _, warped = sd.augment(np.zeros(labels.shape + (1,), np.float32), labels[:, ::-1],
                           np.random.default_rng([seed, j]), p=1.0)
    out.append((warped * 0.5).astype(np.float32)[..., None])
  return out


def synth_dir(workdir: str, gen: str, k: int, source: str) -> str:
  return os.path.join(workdir, 'synth', f'{gen}_k{k}_{source}')


def synthetic_tfds(workdir: str, gen: str, k: int, source: str) -> str:
  """The TFDS version directory of a finished synthetic set; done.json holds it relative
  to the set's folder, so a workdir still reads after a move."""
  base = synth_dir(workdir, gen, k, source)
  return os.path.join(base, files.read_json(os.path.join(base, 'done.json'))['tfds'])
