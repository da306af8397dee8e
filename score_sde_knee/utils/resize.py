"""Area resizing in numpy, equal to `tf.image.resize(x, (size, size), method='area')`.

Each output pixel is the area-weighted mean of the source pixels its footprint covers:
output pixel j spans source coordinates [j * s, (j + 1) * s) with s = n_in / n_out, and a
source pixel i, spanning [i, i + 1), weighs by the length of the overlap. This holds for
upsampling too (s < 1: an output pixel inside one source pixel copies it, one straddling a
boundary mixes the two by overlap). Rows and columns are separable, so the resize is
R @ x @ C^T with two (n_out, n_in) weight matrices.

TensorFlow's kernel (ResizeAreaOp) computes that geometry in float32 and this module does
the same, because the exact version differs from TensorFlow by up to ~3e-5 when s is close
to 1 (e.g. 256 -> 255, 64 -> 100):
  s = float32(n_in) / float32(n_out); the span edges are float32(j) * s, float32(j + 1) * s;
  the source pixels visited are floor(lo) .. ceil(hi) - 1, clamped into the image; each
  weighs by its float32 overlap, and the sum is scaled by float32(1 / (s_rows * s_cols))
  rather than by each row's weight total (which is exactly 1 only without float32
  rounding, e.g. for integer ratios such as 256 -> 64).
The sums are then taken in float64 and the result is float32, so the remaining difference
from TensorFlow is its float32 accumulation (~1e-7 for values in [0, 1]).
"""
import functools

import numpy as np


def area_resize(x: np.ndarray, size: int) -> np.ndarray:
  """(H, W, C) or (N, H, W, C) -> (size, size, C) or (N, size, size, C), float32.

  Args:
    x: real-valued images. A non-square image is resized to size x size all the same
      (each axis by its own ratio), as tf.image.resize does.
    size: the output height and width, >= 1.
  Returns:
    A new float32 array; a float32 copy of x when it already is size x size.
  Raises:
    ValueError: x is not 3-D or 4-D, has an empty axis, or size < 1.
  """
  x = np.asarray(x)
  if x.ndim not in (3, 4) or 0 in x.shape:
    raise ValueError(f'area_resize: x has shape {x.shape}; expected (H, W, C) or '
                     '(N, H, W, C) with no empty axis.')
  if int(size) != size or size < 1:
    raise ValueError(f'area_resize: size is {size!r}; expected an integer >= 1.')
  size = int(size)
  h, w = x.shape[-3], x.shape[-2]
  if (h, w) == (size, size):
    return np.array(x, dtype=np.float32)
  rows, cols = _weights(h, size), _weights(w, size)
  norm = float(np.float32(1.0 / float(_scale(h, size) * _scale(w, size))))
  # Channels to the front so that both contractions are plain matrix products.
  planes = np.moveaxis(x.astype(np.float64), -1, -3)        # (..., C, H, W)
  out = rows @ planes @ cols.T * norm                        # (..., C, size, size)
  return np.moveaxis(out, -3, -1).astype(np.float32)


def _scale(n_in: int, n_out: int) -> np.float32:
  return np.float32(n_in) / np.float32(n_out)


@functools.lru_cache(maxsize=64)
def _weights(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) float64 overlaps, computed with TensorFlow's float32 edges (unscaled)."""
  s = _scale(n_in, n_out)
  m = np.zeros((n_out, n_in), np.float64)
  for j in range(n_out):
    lo, hi = np.float32(j) * s, np.float32(j + 1) * s
    for i in range(int(np.floor(lo)), int(np.ceil(hi))):
      start, end = np.float32(i), np.float32(i + 1)
      if start < lo:
        overlap = s if end > hi else end - lo
      else:
        overlap = hi - start if end > hi else np.float32(1.0)
      # Edges past the image (float32 rounding of hi) fall on its last pixel, as in TF.
      m[j, min(max(i, 0), n_in - 1)] += np.float32(overlap)
  m.setflags(write=False)  # shared by the cache
  return m
