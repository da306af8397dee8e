"""Building blocks of NCSN++ (Song et al. 2021, score_sde's `layerspp.py`), in Flax linen.

All image tensors are NHWC: (batch, height, width, channels), float32.
FIR resampling follows StyleGAN2's upfirdn2d with a separable kernel (the outer product of a
1-D kernel such as (1, 3, 3, 1)), computed with shifted slices so that it fuses well on every
backend instead of relying on depthwise convolutions with input dilation.
"""
from collections.abc import Callable, Sequence
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# Initialisers and small layers
# ---------------------------------------------------------------------------------------------


def default_init(scale: float = 1.0) -> Callable:
  """DDPM's initialiser: variance scaling, fan_avg, uniform. scale 0 means 1e-10.

  A scale of exactly 0 would make every gradient through the layer's input vanish at the
  first step too; 1e-10 keeps the layer's output ~0 while leaving it trainable.
  """
  scale = 1e-10 if scale == 0 else scale
  return jax.nn.initializers.variance_scaling(scale, 'fan_avg', 'uniform')


def conv3x3(x: Array, out_ch: int, init_scale: float = 1.0, name: str | None = None) -> Array:
  """3x3 'SAME' convolution with DDPM initialisation (zero bias). Must run inside compact."""
  return nn.Conv(out_ch, (3, 3), padding='SAME', kernel_init=default_init(init_scale),
                 bias_init=jax.nn.initializers.zeros, name=name)(x)


def conv1x1(x: Array, out_ch: int, init_scale: float = 1.0, name: str | None = None) -> Array:
  """1x1 convolution with DDPM initialisation (zero bias). Must run inside compact."""
  return nn.Conv(out_ch, (1, 1), padding='SAME', kernel_init=default_init(init_scale),
                 bias_init=jax.nn.initializers.zeros, name=name)(x)


def group_norm(x: Array) -> Array:
  """GroupNorm with min(C // 4, 32) groups, as in NCSN++. Must run inside compact."""
  return nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), epsilon=1e-6)(x)


# ---------------------------------------------------------------------------------------------
# FIR up/down-sampling (upfirdn2d)
# ---------------------------------------------------------------------------------------------


def _upfirdn_1d(x: Array, k: np.ndarray, up: int, down: int, pad: tuple[int, int],
                axis: int) -> Array:
  """Upsample by zero insertion, pad, convolve with k, keep every `down`-th sample."""
  if up > 1:
    # Zero insertion after every sample: length L -> L * up.
    zeros = [jnp.zeros_like(x)] * (up - 1)
    x = jnp.stack([x, *zeros], axis=axis + 1)
    shape = list(x.shape)
    shape[axis:axis + 2] = [shape[axis] * up]
    x = x.reshape(shape)
  widths = [(0, 0)] * x.ndim
  widths[axis] = pad
  x = jnp.pad(x, widths)
  n_out = x.shape[axis] - len(k) + 1
  # A true convolution: output[n] = sum_j k[j] * x[n + len(k) - 1 - j].
  k_flipped = k[::-1]
  y = sum(float(k_flipped[j]) * jax.lax.slice_in_dim(x, j, j + n_out, axis=axis)
          for j in range(len(k)))
  if down > 1:
    y = jax.lax.slice_in_dim(y, 0, n_out, stride=down, axis=axis)
  return y


def upfirdn2d(x: Array, kernel_1d: Sequence[float], up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> Array:
  """StyleGAN2's upfirdn2d for the separable kernel outer(kernel_1d, kernel_1d).

  Args:
    x: (B, H, W, C).
    kernel_1d: 1-D FIR taps, used as given (normalise before calling).
    up: integer upsampling factor (zero insertion).
    down: integer downsampling factor (decimation after filtering).
    pad: (before, after) padding, in upsampled pixels, on both spatial axes.

  Returns:
    (B, H', W', C) with H' = (H * up + pad[0] + pad[1] - len(kernel_1d)) // down + 1.
  """
  k = np.asarray(kernel_1d, dtype=np.float64)
  if k.ndim != 1 or k.size == 0:
    raise ValueError(f'upfirdn2d: kernel_1d must be a non-empty 1-D sequence, got {kernel_1d}')
  y = _upfirdn_1d(x, k, up, down, pad, axis=1)
  return _upfirdn_1d(y, k, up, down, pad, axis=2)


def _normalised_kernel(fir_kernel: Sequence[float]) -> np.ndarray:
  k = np.asarray(fir_kernel, dtype=np.float64)
  return k / k.sum()


def upsample_2d(x: Array, fir_kernel: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> Array:
  """(B, H, W, C) -> (B, H*factor, W*factor, C), FIR-filtered, DC gain preserved.

  The 2-D kernel is outer(k, k) / sum(k)^2 * factor^2: the factor^2 makes up for the zero
  samples inserted, so a constant image stays the same constant (away from the borders).
  """
  k = _normalised_kernel(fir_kernel) * factor  # Per axis: factor, so factor^2 in 2-D.
  p = len(k) - factor
  return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Array, fir_kernel: Sequence[float] = (1, 3, 3, 1),
                  factor: int = 2) -> Array:
  """(B, H, W, C) -> (B, H/factor, W/factor, C), FIR-filtered (anti-aliased) decimation."""
  k = _normalised_kernel(fir_kernel)
  p = len(k) - factor
  return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


# ---------------------------------------------------------------------------------------------
# NCSN++ modules
# ---------------------------------------------------------------------------------------------


class GaussianFourierProjection(nn.Module):
  """Fourier features [sin(2 pi v W), cos(2 pi v W)] of a scalar v per example.

  W ~ N(0, scale^2) is drawn once at init and then FIXED: it is stored as a parameter (so a
  checkpoint carries it) but stop_gradient keeps its gradient exactly zero.
  """
  embedding_size: int = 256
  scale: float = 16.0

  @nn.compact
  def __call__(self, v: Array) -> Array:
    """v: (B,) -> (B, 2 * embedding_size)."""
    w = self.param('W', jax.nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
    w = jax.lax.stop_gradient(w)
    proj = v[:, None] * w[None, :] * (2 * np.pi)
    return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class Combine(nn.Module):
  """Merges the input pyramid x into the features y: conv1x1(x) then sum or concatenation."""
  method: str = 'sum'

  @nn.compact
  def __call__(self, x: Array, y: Array) -> Array:
    h = conv1x1(x, y.shape[-1])
    if self.method == 'sum':
      return h + y
    if self.method == 'cat':
      return jnp.concatenate([h, y], axis=-1)
    raise ValueError(f"Combine.method must be 'sum' or 'cat', got {self.method!r}")


class AttnBlock(nn.Module):
  """Single-head self-attention over all H*W positions, residual (optionally / sqrt 2)."""
  skip_rescale: bool = True
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, height, width, c = x.shape
    h = group_norm(x)
    # NIN layers of DDPM: per-pixel dense layers, q/k/v with init scale 0.1.
    q = nn.Dense(c, kernel_init=default_init(0.1), name='q')(h)
    k = nn.Dense(c, kernel_init=default_init(0.1), name='k')(h)
    v = nn.Dense(c, kernel_init=default_init(0.1), name='v')(h)
    q = q.reshape(b, height * width, c)
    k = k.reshape(b, height * width, c)
    v = v.reshape(b, height * width, c)
    w = jnp.einsum('bic,bjc->bij', q, k) * (c ** -0.5)
    w = jax.nn.softmax(w, axis=-1)
    h = jnp.einsum('bij,bjc->bic', w, v).reshape(b, height, width, c)
    h = nn.Dense(c, kernel_init=default_init(self.init_scale), name='out')(h)
    return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
  """BigGAN-style residual block of NCSN++, optionally resampling by 2 with the FIR kernel.

  GN-act-[resample]-conv3x3 (+ Dense(act(temb)) as a per-channel bias) -GN-act-dropout-conv3x3
  (init_scale), shortcut conv1x1 when the shape changes, sum divided by sqrt 2 (skip_rescale).
  """
  out_ch: int | None = None
  up: bool = False
  down: bool = False
  dropout: float = 0.0
  fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
  skip_rescale: bool = True
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x: Array, temb: Array | None, train: bool) -> Array:
    c = x.shape[-1]
    out_ch = self.out_ch or c
    h = nn.silu(group_norm(x))
    if self.up:
      h = upsample_2d(h, self.fir_kernel)
      x = upsample_2d(x, self.fir_kernel)
    elif self.down:
      h = downsample_2d(h, self.fir_kernel)
      x = downsample_2d(x, self.fir_kernel)
    h = conv3x3(h, out_ch)
    if temb is not None:
      h = h + nn.Dense(out_ch, kernel_init=default_init())(nn.silu(temb))[:, None, None, :]
    h = nn.silu(group_norm(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale)
    if c != out_ch or self.up or self.down:
      x = conv1x1(x, out_ch)
    return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h
