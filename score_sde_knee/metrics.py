"""Per-image metrics (paper Table I and mask adherence), in float64 numpy.

Every metric takes a batch with a leading example axis and returns one value per image,
shape (B,). Images are (B, H, W) or (B, H, W, C) arrays (numpy or JAX) with values in
[0, data_range]; samples are expected to be clipped to [0, 1] already.
"""
from collections.abc import Sequence

import numpy as np
from skimage import filters
from skimage.metrics import structural_similarity

# Segmentation labels (docs/design.md, conventions): 0 background, 0.5 contour, 1 contour
# and bone. Midpoints between the labels, so that area-resized (fractional) masks still
# separate.
_CONTOUR_LABEL_MIN = 0.25
_BONE_LABEL_MIN = 0.75


def _as_batch(x, name: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim < 2:
    raise ValueError(f'{name} must be a batch with a leading example axis, got shape {x.shape}')
  return x


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
  x, y = _as_batch(x, 'x'), _as_batch(y, 'y')
  if x.shape != y.shape:
    raise ValueError(f'metric inputs must have the same shape, got {x.shape} and {y.shape}')
  return x, y


def _per_image_mean(a: np.ndarray) -> np.ndarray:
  return a.reshape(a.shape[0], -1).mean(axis=1)


def mae(x, y) -> np.ndarray:
  """Mean absolute error per image, (B,)."""
  x, y = _pair(x, y)
  return _per_image_mean(np.abs(x - y))


def mse(x, y) -> np.ndarray:
  """Mean squared error per image, (B,)."""
  x, y = _pair(x, y)
  return _per_image_mean(np.square(x - y))


def psnr(x, y, data_range: float = 1.0) -> np.ndarray:
  """Peak signal-to-noise ratio in dB per image, 10 log10(data_range^2 / MSE); inf if equal."""
  err = mse(x, y)
  with np.errstate(divide='ignore'):
    return 10.0 * np.log10(data_range**2 / err)


def ssim(x, y, data_range: float = 1.0, win_size: int = 7) -> np.ndarray:
  """Mean structural similarity per image, (B,): scikit-image's structural_similarity.

  With its defaults for 2-D images, which Table I's figures used: a win_size x win_size
  uniform window, K1 = 0.01, K2 = 0.03, sample covariance (N / (N - 1)), the mean over the
  pixels whose window lies fully inside the image. Not the SSIM paper's 11x11 Gaussian
  window (sigma 1.5, population covariance): on knee DRRs that reads ~0.003 lower.
  Channels of (B, H, W, C) are averaged (channel_axis=-1). Inputs are taken in float64.
  """
  x, y = _pair(x, y)
  if x.ndim not in (3, 4):
    raise ValueError(f'ssim expects (B, H, W) or (B, H, W, C) images, got shape {x.shape}')
  if win_size % 2 != 1 or min(x.shape[1:3]) < win_size:
    raise ValueError(
        f'ssim win_size must be odd and at most the image size, got win_size={win_size} '
        f'for images of shape {x.shape[1:3]}')
  channel_axis = -1 if x.ndim == 4 else None
  return np.array([
      structural_similarity(a, b, data_range=data_range, win_size=win_size,
                            channel_axis=channel_axis) for a, b in zip(x, y)], np.float64)


def dice(a, b) -> np.ndarray:
  """Dice coefficient 2 |a & b| / (|a| + |b|) per image of binary masks; 1.0 if both empty.

  Nonzero entries count as foreground.
  """
  a, b = np.asarray(a) != 0, np.asarray(b) != 0
  if a.shape != b.shape or a.ndim < 2:
    raise ValueError(f'dice needs two batches of masks of one shape, got {a.shape}, {b.shape}')
  a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  inter = np.sum(a & b, axis=1)
  total = np.sum(a, axis=1) + np.sum(b, axis=1)
  return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


def bone_mask(sample, contour_threshold: float = 0.1,
              bone_threshold: float | None = None) -> np.ndarray:
  """The bright (bone) region of each image, (B, ...) bool.

  A DRR pixel sums attenuation along its ray, so bone shows as the brighter part of the
  body. Without a fixed bone_threshold, each image's threshold is Otsu's over its own
  pixels above contour_threshold (the body), which adapts to the projection's
  normalisation; a body of fewer than two distinct values has no bone region.
  """
  sample = _as_batch(sample, 'sample')
  out = np.zeros(sample.shape, bool)
  for i, img in enumerate(sample):
    if bone_threshold is not None:
      out[i] = img > bone_threshold
      continue
    body = img[img > contour_threshold]
    if body.size >= 2 and body.min() < body.max():
      out[i] = img > filters.threshold_otsu(body)
  return out


def mask_adherence(sample, cond, threshold: float = 0.1,
                   bone_threshold: float | None = None) -> dict[str, np.ndarray]:
  """How well samples follow their segmentation, per image.

  Returns 'dice_contour': Dice of the sample's own contour (sample > threshold, the rule
  that made the data's contours) and the condition's contour (cond >= 0.25, i.e. label
  0.5 or 1). If any condition in the batch carries bone labels (contour_bone data,
  cond >= 0.75), also 'dice_bone': Dice of `bone_mask(sample, threshold, bone_threshold)`
  and the condition's bone region. The bone region of an image is only estimated, so
  read dice_bone next to its value for the true images (pass them as `sample`).

  Args:
    sample: (B, H, W[, C]) images in [0, 1].
    cond: segmentations of the same shape, values {0, 0.5, 1}.
    threshold: contour threshold on the image (data: 0.1).
    bone_threshold: fixed bone threshold; None = Otsu within each image's body.
  """
  sample, cond = _pair(sample, cond)
  out = {'dice_contour': dice(sample > threshold, cond >= _CONTOUR_LABEL_MIN)}
  cond_bone = cond >= _BONE_LABEL_MIN
  if cond_bone.any():
    out['dice_bone'] = dice(bone_mask(sample, threshold, bone_threshold), cond_bone)
  return out


def summarise(values: Sequence[float] | np.ndarray) -> dict[str, float]:
  """{'mean', 'std'} of per-image values (population std, ddof=0), as Python floats."""
  v = np.asarray(values, dtype=np.float64).reshape(-1)
  if v.size == 0:
    raise ValueError('summarise needs at least one value, got none')
  return {'mean': float(v.mean()), 'std': float(v.std())}
