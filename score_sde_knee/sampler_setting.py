"""A sampler as one string, `solver:n[:name=value,...]`, and the named 49-evaluation ones.

    python main.py --mode=eval   --workdir=runs/ctm_cb --sampler=fast
    python main.py --mode=sample --workdir=runs/csm --masks=m/ --out=o/ --sampler=pc:100

n is N (config.sde.num_scales) for `pc` and ode_steps for `heun` / `dpm2`; the names after
the second colon are OPTIONS' short names of config.sampling fields. `fast` is the
setting benchmarks/RESULTS.md measured within 0.5 dB of PC N = 500 for the run's method
(CTM: snr 0.5; CSM: the paper's snr 0.4, so that SDEdit keeps the paper's trade-off).
It was measured on the 64 px CPU-scale models (sigma_max 32) only; on a 256 px model
(sigma_max 128) compare it with PC N = 500 on a few images first (benchmarks/sampler_curve).
"""
import sys

import ml_collections

from score_sde_knee import fast_sampling
from score_sde_knee import run_config

# Short names for the sampler fields a setting may override after `solver:n:`.
OPTIONS = {'churn': 's_churn', 'tmin': 's_tmin', 'tmax': 's_tmax', 'snoise': 's_noise',
           'rho': 'rho', 'snr': 'snr', 'pred': 'predictor', 'nc': 'n_steps_each', 't0': 't0',
           'jump': 't_jump', 'pre': 'precond', 'prew': 'precond_width',
           'mom': 'momentum', 'air': 'known_air', 'airm': 'air_margin'}
TEXT_OPTIONS = ('pred',)  # Taken as text; the others are numbers.
INT_OPTIONS = ('nc', 'airm')  # Langevin steps per level (pc); pixels.
BOOL_OPTIONS = ('air',)    # 0 or 1.

# 17 ancestral predictor steps + 16 x 2 preconditioned momentum Langevin steps = 49
# evaluations (RESULTS.md, sessions 8, 13-15). The jump to t 0.65 lies above CSM's t0 0.4,
# so it does not act there.
FAST = {
    'ctm': 'pc:17:pred=ancestral,nc=2,snr=0.5,pre=2.5,prew=4,jump=0.65,mom=0.8',
    'csm': 'pc:17:pred=ancestral,nc=2,snr=0.4,pre=2.5,prew=4,jump=0.65,mom=0.8',
}
# `fast-air` is `fast` with the pixels outside the mask held at air but for a free ring,
# as wide as the condition needs: the margin chosen per condition on validation images for
# CSM (RESULTS.md, sessions 25-26). The held air darkens the leg's first pixels; with bone
# in the mask a 1 px ring offsets CSM's too-bright edge, the contour alone needs 2 px.
# A CTM's draws already keep to the contour: the option moves them by 0.2 dB at most.
AIR_MARGIN = {'contour_bone': 1, 'contour': 2}
NAMED = ('fast', 'fast-air')


def resolve(method: str, sampler: str, condition: str) -> str:
  """The setting string that --sampler names for a run of `method` sampling `condition`.

  Raises:
    ValueError: a U-Net run (one forward pass, no sampler), an unknown name, or
      `fast-air` for a condition without a margin.
  """
  if method == 'unet':
    raise ValueError(f'--sampler={sampler}: this run is a U-Net, which takes one forward '
                     'pass and no sampler; --sampler applies to CTM and CSM runs.')
  if sampler == 'fast':
    return FAST[method]
  if sampler == 'fast-air':
    if condition not in AIR_MARGIN:
      raise ValueError(f'--sampler=fast-air: condition {condition!r} has no air margin; '
                       f'expected one of {tuple(AIR_MARGIN)}.')
    return FAST[method] + f',air=1,airm={AIR_MARGIN[condition]}'
  if ':' not in sampler:
    raise ValueError(f'--sampler={sampler}: expected one of {NAMED} or a setting '
                     'solver:n[:name=value,...] such as pc:100 or heun:18:churn=40.')
  return sampler


def expand(method: str, setting: str, condition: str) -> str:
  """`fast`, `fast-air` -> the setting string for `method` and `condition`; any other
  setting unchanged (the benchmarks, which also run plain strings on a U-Net, where they
  cost one forward pass)."""
  return resolve(method, setting, condition) if setting in NAMED else setting


def apply(config: ml_collections.ConfigDict, sampler: str,
          condition: str) -> tuple[ml_collections.ConfigDict, str]:
  """(a copy of config with --sampler's setting for `condition`, the setting); says what
  it will run."""
  setting = resolve(config.method, sampler, condition)
  config = configure(config, setting)
  print(f'sampler {setting}: {fast_sampling.nfe(config)} network evaluations per image',
        file=sys.stderr, flush=True)
  return config, setting


def configure(config: ml_collections.ConfigDict, setting: str) -> ml_collections.ConfigDict:
  """A copy of config sampling with `solver:n[:name=value,...]`.

  n = ode_steps for heun/dpm2 and N for pc; names from OPTIONS, e.g.
  'heun:18:churn=10,tmin=0.05,tmax=10' is EDM's stochastic sampler (Alg. 2) and
  'pc:25:pred=ancestral' PC with the ancestral predictor, 'pc:10:nc=4' four Langevin
  steps per level, 'pc:25:t0=0.6' CSM (SDEdit) started at t0 = 0.6, 'pc:25:jump=0.5' a
  first step from t = 1 straight to t = 0.5, 'pc:25:pre=3,prew=4' a corrector whose
  lowest frequencies take 4x the step (Gaussian low-pass of std 4 px), 'pc:25:mom=0.8' an
  underdamped corrector that keeps 80 % of its velocity per step, 'pc:500:air=1,airm=1'
  the pixels outside the mask held at air but for a free 1 px ring (sampling.py, "Known
  pixels"; `fast-air` picks the ring per condition, AIR_MARGIN).

  Raises:
    ValueError: the setting's syntax, a name or a value, with the part named.
  """
  parts = setting.split(':')
  if len(parts) not in (2, 3):
    raise ValueError(f'setting {setting!r}: expected solver:n[:name=value,...]')
  solver, n = parts[:2]
  config = ml_collections.ConfigDict(config.to_dict())
  config.sampling.method = solver
  try:
    steps = int(n)
  except ValueError:
    raise ValueError(f'setting {setting!r}: the step count {n!r} is not an integer') from None
  if solver == 'pc':
    config.sde.num_scales = steps
  else:
    config.sampling.ode_steps = steps
  for item in (parts[2].split(',') if len(parts) == 3 else []):
    name, _, value = item.partition('=')
    if name not in OPTIONS or not value:
      raise ValueError(f'setting {setting!r}: {item!r} is not name=value with a name in '
                       f'{sorted(OPTIONS)}')
    if name in BOOL_OPTIONS:
      if value not in ('0', '1'):
        raise ValueError(f'setting {setting!r}: {name}={value!r} must be 0 or 1')
      config.sampling[OPTIONS[name]] = value == '1'
      continue
    try:
      config.sampling[OPTIONS[name]] = (value if name in TEXT_OPTIONS else
                                        int(value) if name in INT_OPTIONS else float(value))
    except ValueError as e:
      raise ValueError(f'setting {setting!r}: {name}={value!r} is not a number'
                       + (' (an integer)' if name in INT_OPTIONS else '')) from e
  run_config.validate(config)
  return config


def setting_dir(setting: str) -> str:
  """A folder name for a setting: 'heun:25:churn=40,tmax=30' -> 'heun-25-churn40_tmax30'."""
  return setting.replace(':', '-').replace(',', '_').replace('=', '')
