"""The segmenter's labels, Dice metrics, classic augmentation and training batches (numpy).

Labels (`labels_from_mask`): knee_drr's 'contour_bone' mask holds 0 (air), 0.5 (soft
tissue) and 1 (bone); area-resized masks hold fractions along boundaries, which go to the
nearest label (ties upwards: 0.25 is soft tissue, 0.75 bone).

Dice (`dice`): per image, 2 |P & T| / (|P| + |T|) for the pixel sets P = {pred in labels},
T = {true in labels}. When both sets are empty the prediction is exactly right and the
Dice is 1.0 (not 0/0). BONE = (2,) scores the bone, LEG = (1, 2) the whole leg.

Augmentation (`augment`): a random horizontal flip, a small affine warp, an intensity
jitter and an elastic warp, each applied with probability 0.5, in that order. Geometric
warps move image and labels by the same map (linear interpolation for the image, nearest
neighbour for the labels; the edge pixels extend past the border).

Batches (`train_batches`): the union of the sources, shuffled with the config's seed and
reshuffled every epoch, epochs concatenated and cut into batches (grain.MapDataset, as in
input_pipeline): element i is the batch of step i, a function of i alone, augmented with a
generator seeded by (seed, i). A resumed run therefore sees the batches an uninterrupted
run would.
"""
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from scipy import ndimage

from score_sde_knee import metrics
from score_sde_knee.utils import resize

BONE = (2,)
LEG = (1, 2)
NUM_CLASSES = 3
# Area resizing in float32 may overshoot [0, 1] by rounding; more than this is an error.
_RANGE_TOL = 1e-4
# Augmentation ranges (fractions of the image size where they are lengths).
ROTATION_DEG = 5.0
SCALE = 0.05
SHIFT = 0.04
GAMMA = (0.8, 1.25)
GAIN = 0.10
ELASTIC_SIGMA = 0.08
ELASTIC_AMPLITUDE = 0.02
P_APPLY = 0.5
_SEED_MUL = 1_000_003  # batch i's augmentation seed: (seed * _SEED_MUL + i)


def labels_from_mask(mask: Any) -> np.ndarray:
  """(..., H, W, 1) or (..., H, W) contour_bone values in [0, 1] -> int32 (..., H, W).

  Raises:
    ValueError: a value outside [0, 1] (or NaN), named with its count.
  """
  m = np.asarray(mask, np.float32)
  if m.ndim >= 3 and m.shape[-1] == 1:
    m = m[..., 0]
  bad = ~((m >= -_RANGE_TOL) & (m <= 1 + _RANGE_TOL))
  if bad.any():
    raise ValueError(f'labels_from_mask: the mask holds {float(m[bad][0])!r} '
                     f'({int(bad.sum())} values outside [0, 1]); expected contour_bone '
                     'values 0 (air), 0.5 (soft tissue), 1 (bone).')
  return np.clip(np.floor(m * 2 + 0.5), 0, 2).astype(np.int32)


def dice(pred: Any, true: Any, labels: Sequence[int]) -> np.ndarray:
  """Per-image Dice of {pred in labels} against {true in labels}: float64 (...).

  pred, true: integer label maps (..., H, W) of the same shape. Two empty sets give 1.0
  (`metrics.dice`).
  """
  pred, true = np.asarray(pred), np.asarray(true)
  if pred.shape != true.shape or pred.ndim < 2:
    raise ValueError(f'dice: pred has shape {pred.shape} and true {true.shape}; expected '
                     'the same shape (..., H, W).')
  images = lambda x: np.isin(x, labels).reshape((-1,) + x.shape[-2:])
  return metrics.dice(images(pred), images(true)).reshape(pred.shape[:-2])


def summary(values: Any) -> dict[str, float]:
  """{'mean', 'std'} over images; std is the population std (ddof=0)."""
  return metrics.summarise(values)


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


def _warp_affine(image: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  h, w = labels.shape
  angle = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
  scale = rng.uniform(1 - SCALE, 1 + SCALE)
  shift = rng.uniform(-SHIFT, SHIFT, size=2) * np.array([h, w])
  # affine_transform maps output coordinates o to input ones: matrix @ o + offset. Rotate
  # and scale about the centre, then shift.
  c, s = np.cos(angle) / scale, np.sin(angle) / scale
  matrix = np.array([[c, -s], [s, c]])
  centre = (np.array([h, w]) - 1) / 2
  offset = centre - matrix @ (centre + shift)
  image = ndimage.affine_transform(image, matrix, offset, order=1, mode='nearest')
  labels = ndimage.affine_transform(labels, matrix, offset, order=0, mode='nearest')
  return image, labels


def _warp_elastic(image: np.ndarray, labels: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  h, w = labels.shape
  size = max(h, w)
  coords = np.mgrid[0:h, 0:w].astype(np.float64)
  for axis in range(2):
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)), ELASTIC_SIGMA * size,
                                    mode='reflect')
    # Smoothing shrinks the noise by ~sigma: normalise, so the peak shift is the amplitude.
    field *= ELASTIC_AMPLITUDE * size / max(np.abs(field).max(), 1e-12)
    coords[axis] += field
  image = ndimage.map_coordinates(image, coords, order=1, mode='nearest')
  labels = ndimage.map_coordinates(labels, coords, order=0, mode='nearest')
  return image, labels


def augment(image: Any, labels: Any, rng: np.random.Generator,
            p: float = P_APPLY) -> tuple[np.ndarray, np.ndarray]:
  """One example: image (H, W, 1) float in [0, 1], labels (H, W) int -> augmented copies.

  Deterministic given the generator's state; every random draw is made whether or not its
  transform applies, so the transforms' parameters do not depend on each other's coins.
  """
  img = np.asarray(image, np.float64)[..., 0]
  lab = np.asarray(labels, np.int32)
  coins = rng.uniform(size=4) < p
  gens = rng.spawn(4)
  if coins[0]:
    img, lab = img[:, ::-1], lab[:, ::-1]
  if coins[1]:
    img, lab = _warp_affine(img, lab, gens[1])
  if coins[2]:
    gamma = np.exp(gens[2].uniform(np.log(GAMMA[0]), np.log(GAMMA[1])))
    gain = gens[2].uniform(1 - GAIN, 1 + GAIN)
    img = np.clip(np.clip(img, 0, 1) ** gamma * gain, 0, 1)
  if coins[3]:
    img, lab = _warp_elastic(img, lab, gens[3])
  return (np.ascontiguousarray(img[..., None], np.float32),
          np.ascontiguousarray(lab, np.int32))


def augment_batch(batch: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
  """augment() on every example of {'image': (B, H, W, 1), 'labels': (B, H, W)}."""
  rngs = np.random.default_rng(seed).spawn(len(batch['labels']))
  pairs = [augment(i, l, r) for i, l, r in zip(batch['image'], batch['labels'], rngs)]
  return {'image': np.stack([a for a, _ in pairs]), 'labels': np.stack([b for _, b in pairs])}


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def example_arrays(example: dict, image_size: int = 0) -> dict[str, np.ndarray]:
  """A decoded example -> {'image': (S, S, 1) float32, 'labels': (S, S) int32}.

  image_size 0 keeps the stored size; otherwise both are area-resized first (the mask's
  boundary fractions then go to the nearest label).
  """
  for key in ('image', 'contour_bone'):
    if key not in example:
      raise ValueError(f"The example has no feature {key!r} (features: {sorted(example)}); "
                       'expected a knee_drr-style data set.')
  image = np.asarray(example['image'], np.float32)
  mask = np.asarray(example['contour_bone'], np.float32)
  if image.ndim != 3 or image.shape[-1] != 1 or mask.shape != image.shape:
    raise ValueError(f"The example's 'image' has shape {image.shape} and 'contour_bone' "
                     f'{mask.shape}; expected the same (H, W, 1).')
  if image_size:
    image, mask = resize.area_resize(image, image_size), resize.area_resize(mask, image_size)
  return {'image': image, 'labels': labels_from_mask(mask)}


def train_batches(sources: Sequence[Any], *, batch_size: int, seed: int, augment_: bool,
                  image_size: int = 0) -> grain.MapDataset:
  """The infinite, step-addressable stream of training batches (see the module doc)."""
  if not sources or any(len(s) == 0 for s in sources):
    raise ValueError(f'train_batches: the sources have sizes {[len(s) for s in sources]}; '
                     'expected at least one source, none empty.')
  union = grain.MapDataset.concatenate([grain.MapDataset.source(s) for s in sources])
  ds = (union.map(lambda ex: example_arrays(ex, image_size))
        .shuffle(seed=seed).repeat(reseed_each_epoch=True)
        .batch(batch_size, drop_remainder=True))
  if augment_:
    ds = ds.map_with_index(lambda i, b: augment_batch(b, seed * _SEED_MUL + i))
  return ds
