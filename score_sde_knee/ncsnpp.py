"""NCSN++ (Song et al. 2021, score_sde's `models/ncsnpp.py`) as a Flax linen module.

Only the variant used by the paper's 256 px configuration is built: BigGAN residual blocks
with FIR resampling, progressive='output_skip' (or 'none'), progressive_input='input_skip'
(or 'none'), Gaussian Fourier embedding of log(sigma). With noise_conditioned=False the same
backbone, without any noise input, is the paper's U-Net baseline. The network knows no
method: what its input channels hold and how its output becomes a score (divided by sigma)
is model_utils.get_score_fn's business, as EDM's preconditioning wraps its backbone.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde_knee import layers

Array = jax.Array

_RESBLOCK_TYPES = ('biggan',)
_PROGRESSIVE = ('none', 'output_skip')
_PROGRESSIVE_INPUT = ('none', 'input_skip')
_COMBINE = ('sum', 'cat')


class NCSNpp(nn.Module):
  """Network F(x, sigma) (or, with noise_conditioned=False, a plain U-Net F(x)).

  Attributes:
    nf: base channel count; level i has nf * ch_mult[i] channels.
    ch_mult: channel multipliers, one per resolution level (each level halves H and W).
    num_res_blocks: residual blocks per level on the way down (one more on the way up).
    attn_resolutions: spatial sizes (H) at which self-attention blocks are inserted.
    dropout: dropout rate inside residual blocks (active only when train=True).
    fir_kernel: 1-D FIR taps of the separable up/down-sampling filter.
    skip_rescale: divide residual sums by sqrt 2.
    resblock_type: 'biggan' (the only one implemented).
    progressive: 'output_skip' (output pyramid summed across levels) or 'none'.
    progressive_input: 'input_skip' (downsampled input merged at each level) or 'none'.
    progressive_combine: how the input pyramid is merged: 'sum' or 'cat'.
    init_scale: init scale of the last conv of each block, attention outputs and output
      convs; 0 means ~0 (1e-10 variance scaling) so the network starts near zero.
    fourier_scale: std of the fixed Fourier-feature frequencies W.
    out_channels: channels of the output (the image's, 1), whatever the input has.
    noise_conditioned: embed log(sigma); False = U-Net baseline (sigma unused).
  """
  nf: int = 64
  ch_mult: tuple[int, ...] = (1, 2, 2, 2, 2, 4)
  num_res_blocks: int = 2
  attn_resolutions: tuple[int, ...] = (16,)
  dropout: float = 0.0
  fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
  skip_rescale: bool = True
  resblock_type: str = 'biggan'
  progressive: str = 'output_skip'
  progressive_input: str = 'input_skip'
  progressive_combine: str = 'sum'
  init_scale: float = 0.0
  fourier_scale: float = 16.0
  out_channels: int = 1
  noise_conditioned: bool = True

  def _check(self, x: Array, sigma: Array | None) -> None:
    for field, value, allowed in (('resblock_type', self.resblock_type, _RESBLOCK_TYPES),
                                  ('progressive', self.progressive, _PROGRESSIVE),
                                  ('progressive_input', self.progressive_input,
                                   _PROGRESSIVE_INPUT),
                                  ('progressive_combine', self.progressive_combine, _COMBINE)):
      if value not in allowed:
        raise ValueError(f'NCSNpp.{field} must be one of {allowed}, got {value!r}')
    if x.ndim != 4:
      raise ValueError(f'NCSNpp: x must be (B, H, W, C), got shape {x.shape}')
    stride = 2 ** (len(self.ch_mult) - 1)
    if x.shape[1] % stride or x.shape[2] % stride:
      raise ValueError(
          f'NCSNpp: H and W must be divisible by 2^(len(ch_mult)-1) = {stride} for '
          f'ch_mult={self.ch_mult}, got x of shape {x.shape}')
    if self.noise_conditioned and (sigma is None or sigma.shape != (x.shape[0],)):
      raise ValueError(
          f'NCSNpp: sigma must have shape (B,) = ({x.shape[0]},), got '
          f'{None if sigma is None else sigma.shape}')

  @nn.compact
  def __call__(self, x: Array, sigma: Array | None, train: bool = False) -> Array:
    """Network output.

    Args:
      x: (B, H, W, C_in) float32 in data space [0, 1] (noisy image, with condition channels
        already concatenated by the caller for CTM).
      sigma: (B,) noise standard deviations; ignored (may be None) if not noise_conditioned.
      train: enables dropout (needs a 'dropout' rng when dropout > 0).

    Returns:
      (B, H, W, out_channels): sigma times the score of a VE score model (the caller
      divides by sigma), or the predicted image for the U-Net baseline.
    """
    self._check(x, sigma)
    num_levels = len(self.ch_mult)
    resblock = lambda **kw: layers.ResnetBlockBigGAN(
        dropout=self.dropout, fir_kernel=tuple(self.fir_kernel),
        skip_rescale=self.skip_rescale, init_scale=self.init_scale, **kw)
    attn = lambda: layers.AttnBlock(skip_rescale=self.skip_rescale,
                                    init_scale=self.init_scale)
    combine = lambda: layers.Combine(method=self.progressive_combine)

    if self.noise_conditioned:
      # score_sde embeds log(sigma) for the VE SDE: frequencies W ~ N(0, 16^2) resolve the
      # ~9.5 units of log(sigma_max / sigma_min) finely.
      # In float32 whatever the compute dtype (see model_utils.cast_params), then cast.
      temb = layers.GaussianFourierProjection(
          embedding_size=self.nf, scale=self.fourier_scale)(
              jnp.log(sigma.astype(jnp.float32))).astype(x.dtype)
      temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init())(temb)
      temb = nn.Dense(self.nf * 4, kernel_init=layers.default_init())(nn.silu(temb))
    else:
      temb = None

    # Data are in [0, 1], not centred: map to [-1, 1].
    x = 2.0 * x - 1.0
    input_pyramid = x

    # Downsampling path.
    hs = [layers.conv3x3(x, self.nf)]
    for level in range(num_levels):
      for _ in range(self.num_res_blocks):
        h = resblock(out_ch=self.nf * self.ch_mult[level])(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn()(h)
        hs.append(h)
      if level != num_levels - 1:
        h = resblock(down=True)(hs[-1], temb, train)
        if self.progressive_input == 'input_skip':
          input_pyramid = layers.downsample_2d(input_pyramid, self.fir_kernel)
          h = combine()(input_pyramid, h)
        hs.append(h)

    h = hs[-1]
    h = resblock()(h, temb, train)
    h = attn()(h)
    h = resblock()(h, temb, train)

    # Upsampling path.
    pyramid = None
    for level in reversed(range(num_levels)):
      for _ in range(self.num_res_blocks + 1):
        h = resblock(out_ch=self.nf * self.ch_mult[level])(
            jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = attn()(h)
      if self.progressive == 'output_skip':
        out = layers.conv3x3(nn.silu(layers.group_norm(h)), self.out_channels,
                             init_scale=self.init_scale)
        pyramid = out if pyramid is None else (
            layers.upsample_2d(pyramid, self.fir_kernel) + out)
      if level != 0:
        h = resblock(up=True)(h, temb, train)
    assert not hs, 'every skip connection must be consumed'

    if self.progressive == 'output_skip':
      h = pyramid
    else:
      h = layers.conv3x3(nn.silu(layers.group_norm(h)), self.out_channels,
                         init_scale=self.init_scale)
    return h
