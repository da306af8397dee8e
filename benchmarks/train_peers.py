"""Our NCSN++ (Flax) against diffusers' UNet2DModel built as NCSN++ (PyTorch, CPU); one JSON.

    nice -n 19 .venv-bench/bin/python -m benchmarks.train_peers                  # cpu scale
    nice -n 19 .venv-bench/bin/python -m benchmarks.train_peers --scale paper --batch 2
    ... [--repeats 5] [--what train,pc]

Both networks get the config's image size, levels (nf, ch_mult, num_res_blocks,
attn_resolutions), batch, and CTM's input: noisy image + segmentation = 2 channels in, 1
out. Times, side by side in one process (seconds: median of --repeats calls after one
warm-up call, reported as first_call_seconds; JAX is compiled before that):
  train: one training step. Ours: the jitted `train_state.make_train_step` (DSM loss, grad
    clip, Adam, EMA; benchmarks/train.py's program). Peer: the same VE DSM loss
    (losses.dsm_per_example), backward, clip_grad_norm_(1.0), torch.optim.Adam, EMA.
  pc: one predictor-corrector step = 2 network evaluations: a Langevin corrector step (snr
    of config.sampling) then a reverse-diffusion predictor step at t = 0.5. Ours: our
    sampling.pc_sample with n_steps=1, order='corrector_first' (exactly C then P), jitted;
    peer: the same arithmetic in torch under no_grad / eval().
Ratios are peer_seconds / our_seconds (> 1: ours is faster). The peer always runs on the
CPU with torch.set_num_threads(os.cpu_count()); ours on JAX's default backend (named in
the output). The diffusers model differs from NCSN++ in a few details that do not change
its size (see `peer_notes` in the output).
"""
import argparse
import json
import os
import platform
import sys
import time

if not __package__:  # Run as a script: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from benchmarks import train as bench_train  # pylint: disable=g-import-not-at-top
from benchmarks.drr_peers import time_calls
from configs import default
from score_sde_knee import methods
from score_sde_knee import model_utils
from score_sde_knee import parallel
from score_sde_knee import sampler_setting
from score_sde_knee import sampling
from score_sde_knee import train_state as ts
from score_sde_knee.utils import xla_cpu

WHAT = ('train', 'pc')
PC_T = 0.5  # Time of the timed PC step: any interior t costs the same.
PEER_NOTES = [
    'skip_conv of the Skip blocks is hard-coded to 3 (RGB) channels; rebuilt here as '
    '1x1 conv C_in -> C (down) and 3x3 conv C -> C_out (up), the shapes NCSN++ has',
    'attention GroupNorm has 32 groups (hard-coded) and AttnSkipUpBlock2D resnets '
    'min(C_in + C_skip // 4, 32) (operator precedence), NCSN++ min(C // 4, 32): same '
    'parameter count, slightly different normalisation',
    'FIR resampling with the same (1,3,3,1) filter, but as upfirdn2d_native (zero '
    'stuffing, pad, channels folded into the batch, one 4x4 single-channel conv2d) '
    'against our separable 1-D FIR',
    'PyTorch eager (no torch.compile), float32',
    'PyTorch default initialisation, not score_sde\'s variance scaling with init_scale 0',
    'the fixed Fourier W: requires_grad=False in diffusers (not in Adam); ours is a '
    'parameter with stop_gradient (in the Adam state, zero gradient)',
    'peer Adam has a constant lr (ours: linear warm-up); no effect on the time',
]


def _config(scale: str, batch: int | None):
  config = default.get_config(scale, method='ctm')
  if batch:
    config.training.batch_size = batch
  return config


def _sigma(config, t):
  """VE sigma(t) (sde.VESDE.sigma), for numpy or torch t."""
  s = config.sde
  return s.sigma_min * (s.sigma_max / s.sigma_min) ** t


# ------------------------------------------------------------------------------ ours


def bench_ours(config, what: list[str], repeats: int, batch: dict) -> dict:
  mesh = parallel.make_mesh()
  model = model_utils.create_model(config)
  sde = ts.make_sde(config)
  state = ts.init_train_state(config, model, mesh)
  out = {'device': str(jax.devices()[0].device_kind), 'backend': jax.default_backend(),
         'num_params': model_utils.count_params(state.params)}
  if 'pc' in what:  # First: the train step below donates (deletes) these parameters.
    score_fn = model_utils.get_score_fn(model, sde, methods.CTM,
                                        scale_by_sigma=bool(config.model.scale_by_sigma))
    p = config.sampling
    one_step = sampler_setting.SamplerSettings(
        n_steps=1, eps=float(p.eps), snr=float(p.snr), n_steps_each=1,
        order='corrector_first', per_sample_step=bool(p.per_sample_step))

    def pc_step(params, x, cond, rng):
      return sampling.pc_sample(lambda x, t, c: score_fn(params, x, t, c), sde, x, cond, rng,
                                one_step, t_start=PC_T)

    x = jax.numpy.asarray(_sigma(config, PC_T) * batch['noise'])
    cond, key = jax.numpy.asarray(batch['cond']), jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    compiled = jax.jit(pc_step).lower(state.params, x, cond, key).compile()
    compile_s = time.perf_counter() - t0
    fn = lambda: jax.block_until_ready(compiled(state.params, x, cond, key))
    out['pc'], _ = time_calls(fn, repeats)
    out['pc']['compile_seconds'] = compile_s
  if 'train' in what:
    data = parallel.global_batch_from_local({k: batch[k] for k in ('image', 'cond')}, mesh)
    t0 = time.perf_counter()
    compiled = ts.make_train_step(config, model, mesh).lower(state, data).compile()
    compile_s = time.perf_counter() - t0
    holder = [state]

    def train_step():
      holder[0], metrics = compiled(holder[0], data)
      return float(metrics['loss'])  # float() waits for the step.

    out['train'], loss = time_calls(train_step, repeats)
    out['train'].update(compile_seconds=compile_s, last_loss=loss)
  return out


# ------------------------------------------------------------------------------ peer


def _import_diffusers():
  # diffusers imports torchvision whenever it is installed (transformer_cosmos, pulled in
  # by unet_2d_blocks), and the torchvision wheel here fails to import against the +cpu
  # torch; the U-Net needs none of it, so diffusers is told it is absent.
  from diffusers.utils import import_utils  # pylint: disable=g-import-not-at-top
  import_utils._torchvision_available = False  # pylint: disable=protected-access
  import diffusers  # pylint: disable=g-import-not-at-top
  return diffusers


def make_peer(config, in_channels: int = 2, out_channels: int = 1):
  """UNet2DModel as NCSN++ (as diffusers' own NCSN++ test config and google/ncsnpp-*)."""
  from torch import nn  # pylint: disable=g-import-not-at-top
  diffusers = _import_diffusers()
  m, size = config.model, config.data.image_size
  attn = [size // 2**i in m.attn_resolutions for i in range(len(m.ch_mult))]
  model = diffusers.UNet2DModel(
      sample_size=size, in_channels=in_channels, out_channels=out_channels,
      center_input_sample=True,          # Ours maps [0, 1] data to 2x - 1 too.
      time_embedding_type='fourier',     # Fourier features of log(sigma), scale 16;
      flip_sin_to_cos=True, freq_shift=1,  # these two act on positional embeddings only.
      block_out_channels=[m.nf * c for c in m.ch_mult],
      layers_per_block=m.num_res_blocks,
      down_block_types=['AttnSkipDownBlock2D' if a else 'SkipDownBlock2D' for a in attn],
      up_block_types=['AttnSkipUpBlock2D' if a else 'SkipUpBlock2D' for a in attn[::-1]],
      mid_block_scale_factor=2**0.5,     # skip_rescale (the blocks' default is sqrt 2).
      attention_head_dim=None,           # One head, as NCSN++.
      norm_num_groups=None,              # min(C // 4, 32) groups.
      norm_eps=1e-6, act_fn='silu', resnet_time_scale_shift='default', dropout=0.0)
  # The Skip blocks hard-code RGB: progressive input 1x1 conv from 3 channels, output
  # skip 3x3 conv to 3 channels. NCSN++'s have the image's channel counts.
  for block in model.down_blocks:
    if getattr(block, 'skip_conv', None) is not None:
      block.skip_conv = nn.Conv2d(in_channels, block.skip_conv.out_channels, 1)
  for block in model.up_blocks:
    if getattr(block, 'skip_conv', None) is not None:
      block.skip_conv = nn.Conv2d(block.skip_conv.in_channels, out_channels, 3, padding=1)
  return model


def bench_peer(config, what: list[str], repeats: int, batch: dict) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  model = make_peer(config)
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
  image, cond = nchw(batch['image']), nchw(batch['cond'])
  score = lambda x, sigma: model(torch.cat([x, cond], dim=1), sigma).sample
  out = {'device': f'cpu, {torch.get_num_threads()} threads',
         'num_params': sum(p.numel() for p in model.parameters())}

  if 'pc' in what:
    snr = float(config.sampling.snr)
    x0 = _sigma(config, PC_T) * nchw(batch['noise'])
    sigma = torch.full((x0.shape[0],), _sigma(config, PC_T), dtype=torch.float32)
    norms = lambda a: torch.linalg.vector_norm(a.flatten(1), dim=1)

    def pc_step():
      # As our pc_sample with n_steps=1: Langevin corrector, then the reverse-diffusion
      # predictor from sigma to the grid's next level (0 for a one-step grid).
      with torch.no_grad():
        x = x0
        s, z = score(x, sigma), torch.randn_like(x)
        e = 2.0 * (snr * norms(z).mean() / norms(s).mean()) ** 2  # batch-wide step size
        x = x + e * s + torch.sqrt(2.0 * e) * z
        var = sigma[:, None, None, None] ** 2
        x_mean = x + var * score(x, sigma)
        return (x_mean + torch.sqrt(var) * torch.randn_like(x)).numpy()

    model.eval()
    out['pc'], _ = time_calls(pc_step, repeats)

  if 'train' in what:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    o, eps = config.optim, float(config.training.eps)
    opt = torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    decay = float(config.model.ema_rate)

    def train_step():
      t = eps + (1.0 - eps) * torch.rand(image.shape[0])
      sigma = _sigma(config, t)
      z = torch.randn_like(image)
      s = score(image + sigma[:, None, None, None] * z, sigma)
      # losses.dsm_per_example: 0.5 sum_pixels (sigma s + z)^2, mean over the batch.
      loss = (0.5 * (sigma[:, None, None, None] * s + z).square().sum((1, 2, 3))).mean()
      opt.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
      opt.step()
      with torch.no_grad():
        for e, p in zip(ema, params):
          e.lerp_(p, 1.0 - decay)
      return float(loss.detach())

    out['train'], loss = time_calls(train_step, repeats)
    out['train']['last_loss'] = loss
  return out


# ------------------------------------------------------------------------------ main


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--scale', default='cpu', choices=('cpu', 'paper'))
  p.add_argument('--batch', type=int, default=0, help="global batch (0 = the config's, 16)")
  p.add_argument('--repeats', type=int, default=5, help='timed calls after one warm-up')
  p.add_argument('--what', default='train,pc', help='comma-separated: train,pc')
  args = p.parse_args(argv)
  what = [w for w in args.what.split(',') if w]
  if not what or any(w not in WHAT for w in what):
    p.error(f'--what must be some of {WHAT}, got {args.what!r}')
  if args.repeats < 1 or args.batch < 0:
    p.error('--repeats must be >= 1 and --batch >= 0')
  config = _config(args.scale, args.batch or None)
  rng = np.random.default_rng(0)
  batch = bench_train._batch(config, rng)  # pylint: disable=protected-access
  batch['noise'] = rng.standard_normal(batch['image'].shape, dtype=np.float32)

  print(f'ours ({args.scale}, batch {config.training.batch_size}) ...', file=sys.stderr)
  ours = bench_ours(config, what, args.repeats, batch)
  print('diffusers ...', file=sys.stderr)
  peer = bench_peer(config, what, args.repeats, batch)

  import diffusers  # pylint: disable=g-import-not-at-top
  import torch
  m = config.model
  result = {
      'benchmark': 'train_peers', 'scale': args.scale,
      'image_size': config.data.image_size, 'batch_size': config.training.batch_size,
      'in_channels': methods.CTM.input_channels, 'out_channels': 1,
      'nf': m.nf, 'ch_mult': list(m.ch_mult), 'num_res_blocks': m.num_res_blocks,
      'attn_resolutions': list(m.attn_resolutions), 'repeats': args.repeats,
      'num_params': {'ours': ours['num_params'], 'diffusers': peer['num_params'],
                     'ratio': round(peer['num_params'] / ours['num_params'], 4)},
      'device': {'ours': f"{ours['backend']}: {ours['device']}",
                 'diffusers': peer['device']},
  }
  rounded = lambda d: {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}
  for w in what:
    result[f'{w}_step'] = {
        'ours': rounded(ours[w]), 'diffusers': rounded(peer[w]),
        'ratio': round(peer[w]['seconds'] / ours[w]['seconds'], 3)}
  result['versions'] = {'jax': jax.__version__, 'torch': torch.__version__,
                        'diffusers': diffusers.__version__,
                        'python': platform.python_version()}
  result['load_avg_1m'] = round(os.getloadavg()[0], 2)
  result['peer_notes'] = PEER_NOTES
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  xla_cpu.configure()  # what main.py runs; before JAX starts
  main()
