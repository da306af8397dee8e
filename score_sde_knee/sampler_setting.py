"""The sampler's settings as one frozen dataclass, the `--sampler` string and the presets.

    python main.py --mode=eval   --workdir=runs/ctm_cb --sampler=fast
    python main.py --mode=sample --workdir=runs/csm --masks=m/ --out=o/ --sampler=pc:100

`SamplerSettings` is what every sampler reads (sampling.py, ode_sampling.py); it is built
and validated once, from a config (`from_config`: config.sampling and N) or from a config
and a `--sampler` string (`configure`, which also returns the config the run records).

A string is `solver:n[:name=value,...]`: n is N (config.sde.num_scales) for `pc` and
ode_steps for `heun` / `dpm2`; the names are OPTIONS' short names of config.sampling fields.

The presets, named by `--sampler`, the demo and the README, are written here only (`preset`):
  paper     pc:500, the paper's N = 500 with its corrector (snr 0.4, one Langevin step,
            reverse-diffusion predictor) even on a run whose config samples otherwise.
  fast      49 evaluations: 17 ancestral predictor steps, 2 preconditioned momentum
            Langevin steps at each of the 16 levels above sigma_min, the first step a jump
            to t = 0.65. benchmarks/RESULTS.md measured it within 0.5 dB of PC N = 500 for
            the run's method (CTM: snr 0.5; CSM: the paper's snr 0.4, so that SDEdit keeps
            the paper's trade-off), on the 64 px CPU-scale models (sigma_max 32) only; on a
            256 px model (sigma_max 128) compare it with PC N = 500 on a few images first
            (benchmarks/sampler_curve.py).
  fast-air  fast with the pixels outside the mask held at air but for a free ring of
            AIR_MARGIN[condition] pixels (sampling_variants.py, "Known pixels").
"""
import copy
import dataclasses
import math
import sys

import ml_collections

from score_sde_knee import methods

SOLVERS = ('pc', 'heun', 'dpm2')  # config.sampling.method; heun, dpm2: ode_sampling.py.
ODE_SOLVERS = SOLVERS[1:]
ORDERS = ('predictor_first', 'corrector_first')
PREDICTORS = ('reverse_diffusion', 'ancestral')


class SettingError(ValueError):
  """A sampler value out of range; `field` is SamplerSettings', `expected` says what fits."""

  def __init__(self, field: str, value, expected: str):
    super().__init__(f'sampler {field}={value!r}: expected {expected}.')
    self.field, self.value, self.expected = field, value, expected


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """How CTM and CSM sample; the defaults are configs/default.py's (the paper's).

  The fields are config.sampling's (`solver` is its `method`), with n_steps the N of the
  solver: config.sde.num_scales for pc, config.sampling.ode_steps for heun / dpm2.
  """
  solver: str = 'pc'                 # pc (predictor-corrector) | heun | dpm2 (PF-ODE).
  n_steps: int = 500                 # pc: predictor steps; heun / dpm2: noise levels.
  # pc (sampling.py).
  snr: float = 0.4                   # Langevin signal-to-noise ratio; 0: no corrector.
  n_steps_each: int = 1              # Langevin steps per level; 0: no corrector.
  order: str = 'predictor_first'     # The paper's; 'corrector_first' is score_sde's.
  per_sample_step: bool = False      # One corrector step size per example, not per batch.
  predictor: str = 'reverse_diffusion'  # Or 'ancestral'.
  t0: float = 0.4                    # CSM (SDEdit) start time, in (eps, 1].
  eps: float = 1e-5                  # Last time of the grid.
  # pc, research variants (sampling_variants.py).
  t_jump: float = 1.0                # < 1: the first step jumps to sigma(t_jump).
  precond: float = 0.0               # > 0: the corrector's low frequencies step farther,
  precond_width: float = 4.0         # by a Gaussian low-pass of this std (pixels).
  momentum: float = 0.0              # > 0: an underdamped corrector keeping this velocity.
  known_air: bool = False            # Hold the pixels outside the mask at air (0),
  air_margin: int = 0                # all but those within this many pixels of the mask.
  # heun / dpm2 (ode_sampling.py, EDM).
  rho: float = 7.0
  s_churn: float = 0.0
  s_tmin: float = 0.0
  s_tmax: float = math.inf
  s_noise: float = 1.0

  def __post_init__(self):
    def bad(field, expected):
      raise SettingError(field, getattr(self, field), expected)
    for field, choices in (('solver', SOLVERS), ('order', ORDERS),
                           ('predictor', PREDICTORS)):
      if getattr(self, field) not in choices:
        bad(field, f'one of {choices}')
    for field in ('per_sample_step', 'known_air'):
      if not isinstance(getattr(self, field), bool):
        bad(field, 'True or False')
    for field, lowest in (('n_steps', 1), ('n_steps_each', 0), ('air_margin', 0)):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        bad(field, f'an integer >= {lowest}')
    for field in ('snr', 'precond', 's_churn', 's_tmin', 's_noise'):
      if not getattr(self, field) >= 0:
        bad(field, 'a value >= 0')
    for field in ('precond_width', 'rho'):
      if not getattr(self, field) > 0:
        bad(field, 'a value > 0')
    if not 0 < self.eps < 1:
      bad('eps', 'a value > 0 and < 1')
    if not 0 < self.t0 <= 1:
      bad('t0', 'a value > 0 and <= 1')
    if not self.eps < self.t_jump <= 1:
      bad('t_jump', f'a value > eps = {self.eps} and <= 1')
    if not 0 <= self.momentum < 1:
      bad('momentum', 'a value >= 0.0 and < 1.0')
    if self.known_air and self.solver != 'pc':
      bad('known_air', f"False with solver {self.solver!r} (held pixels need solver 'pc')")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'SamplerSettings':
    """config.sampling and N (a saved config gets the fields added later from
    run_config.load)."""
    p = config.sampling
    floats = ('snr', 't0', 'eps', 't_jump', 'precond', 'precond_width', 'momentum', 'rho',
              's_churn', 's_tmin', 's_tmax', 's_noise')
    # A whole number written as a float (500.0) counts as that integer.
    whole = lambda v: int(v) if isinstance(v, float) and v.is_integer() else v
    for f in floats:
      if isinstance(p[f], bool) or not isinstance(p[f], (int, float)):
        raise SettingError(f, p[f], 'a number')
    return cls(solver=p.method,
               n_steps=whole(config.sde.num_scales if p.method == 'pc' else p.ode_steps),
               n_steps_each=whole(p.n_steps_each), order=p.order,
               per_sample_step=p.per_sample_step, predictor=p.predictor,
               known_air=p.known_air, air_margin=whole(p.air_margin),
               **{f: float(p[f]) for f in floats})

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> 'SamplerSettings':
    """from_config, with an error that names the config field (run_config.validate)."""
    try:
      return cls.from_config(config)
    except SettingError as e:
      pc = config.sampling.method == 'pc'
      field = {'solver': 'sampling.method',
               'n_steps': 'sde.num_scales' if pc else 'sampling.ode_steps'}.get(
                   e.field, f'sampling.{e.field}')
      raise ValueError(f'config.{field}={e.value!r}: expected {e.expected}.') from None

  @property
  def corrects(self) -> bool:
    """Whether pc runs a Langevin corrector."""
    return self.n_steps_each > 0 and self.snr > 0

  @property
  def nfe(self) -> int:
    """Network evaluations per sample. pc with N predictor steps and n Langevin steps
    each: N (1 + n) for 'corrector_first', N + (N - 1) n for 'predictor_first' (no
    corrector at sigma = 0; sampling.py); heun / dpm2: 2 N - 1."""
    if self.solver in ODE_SOLVERS:
      return 2 * self.n_steps - 1
    n = self.n_steps_each if self.corrects else 0
    if self.order == 'corrector_first':
      return self.n_steps * (1 + n)
    return self.n_steps + (self.n_steps - 1) * n


def nfe(config: ml_collections.ConfigDict) -> int:
  """Network evaluations per sample that `sampling.get_sampler(config)` spends (U-Net: 1)."""
  if methods.get(config.method).sampling == 'forward':
    return 1
  return SamplerSettings.from_config(config).nfe


# Short names for the sampler fields a string may set after `solver:n:`.
OPTIONS = {'churn': 's_churn', 'tmin': 's_tmin', 'tmax': 's_tmax', 'snoise': 's_noise',
           'rho': 'rho', 'snr': 'snr', 'pred': 'predictor', 'nc': 'n_steps_each', 't0': 't0',
           'jump': 't_jump', 'pre': 'precond', 'prew': 'precond_width',
           'mom': 'momentum', 'air': 'known_air', 'airm': 'air_margin'}
TEXT_OPTIONS = ('pred',)  # Taken as text; the others are numbers.
INT_OPTIONS = ('nc', 'airm')  # Langevin steps per level (pc); pixels.
BOOL_OPTIONS = ('air',)    # 0 or 1.

PRESETS = ('paper', 'fast', 'fast-air')
PAPER = 'pc:500:pred=reverse_diffusion,nc=1,snr=0.4,pre=0,jump=1,mom=0,air=0'
# 17 ancestral predictor steps + 16 x 2 preconditioned momentum Langevin steps = 49
# evaluations (benchmarks/RESULTS.md). The jump to t 0.65 lies above CSM's t0 0.4, so it
# does not act there.
FAST = {
    'ctm': 'pc:17:pred=ancestral,nc=2,snr=0.5,pre=2.5,prew=4,jump=0.65,mom=0.8',
    'csm': 'pc:17:pred=ancestral,nc=2,snr=0.4,pre=2.5,prew=4,jump=0.65,mom=0.8',
}
# fast-air's free ring, chosen per condition on validation images for CSM (RESULTS.md).
# The held air darkens the leg's first pixels; with bone in the mask a 1 px ring offsets
# CSM's too-bright edge, the contour alone needs 2 px. A CTM's draws already keep to the
# contour: the option moves them by 0.2 dB at most.
AIR_MARGIN = {'contour_bone': 1, 'contour': 2}


def preset(name: str, method: str, condition: str) -> str:
  """The setting string of preset `name` (module docstring) for `method` and `condition`.

  Raises:
    ValueError: not a preset name, or `fast-air` for a condition without a margin.
  """
  if name == 'paper':
    return PAPER
  if name == 'fast':
    return FAST[method]
  if name == 'fast-air':
    if condition not in AIR_MARGIN:
      raise ValueError(f'--sampler=fast-air: condition {condition!r} has no air margin; '
                       f'expected one of {tuple(AIR_MARGIN)}.')
    return FAST[method] + f',air=1,airm={AIR_MARGIN[condition]}'
  raise ValueError(f'--sampler={name}: expected one of {PRESETS} or a setting '
                   'solver:n[:name=value,...] such as pc:100 or heun:18:churn=40.')


def resolve(method: str, sampler: str, condition: str) -> str:
  """The setting string that --sampler (a preset or a string) names for a run of `method`
  sampling `condition`.

  Raises:
    ValueError: a U-Net run (one forward pass, no sampler), an unknown name, or
      `fast-air` for a condition without a margin.
  """
  if methods.get(method).sampling == 'forward':
    raise ValueError(f'--sampler={sampler}: this run is a U-Net, which takes one forward '
                     'pass and no sampler; --sampler applies to CTM and CSM runs.')
  return sampler if ':' in sampler else preset(sampler, method, condition)


def expand(method: str, setting: str, condition: str) -> str:
  """A preset name -> its setting string for `method` and `condition`; any other setting
  unchanged (the benchmarks, which also run plain strings on a U-Net, where they cost one
  forward pass)."""
  return resolve(method, setting, condition) if setting in PRESETS else setting


def apply(config: ml_collections.ConfigDict, sampler: str,
          condition: str) -> tuple[ml_collections.ConfigDict, str]:
  """(a copy of config with --sampler's setting for `condition`, the setting); says what
  it will run."""
  setting = resolve(config.method, sampler, condition)
  config = configure(config, setting)
  print(f'sampler {setting}: {nfe(config)} network evaluations per image',
        file=sys.stderr, flush=True)
  return config, setting


def configure(config: ml_collections.ConfigDict, setting: str) -> ml_collections.ConfigDict:
  """A copy of config sampling with `solver:n[:name=value,...]`, validated (SamplerSettings).

  n = ode_steps for heun/dpm2 and N for pc; names from OPTIONS, e.g.
  'heun:18:churn=10,tmin=0.05,tmax=10' is EDM's stochastic sampler (Alg. 2) and
  'pc:25:pred=ancestral' PC with the ancestral predictor, 'pc:10:nc=4' four Langevin
  steps per level, 'pc:25:t0=0.6' CSM (SDEdit) started at t0 = 0.6, 'pc:25:jump=0.5' a
  first step from t = 1 straight to t = 0.5, 'pc:25:pre=3,prew=4' a corrector whose
  lowest frequencies take 4x the step (Gaussian low-pass of std 4 px), 'pc:25:mom=0.8' an
  underdamped corrector that keeps 80 % of its velocity per step, 'pc:500:air=1,airm=1'
  the pixels outside the mask held at air but for a free 1 px ring.

  Raises:
    ValueError: the setting's syntax, a name or a value, with the part named.
  """
  parts = setting.split(':')
  if len(parts) not in (2, 3):
    raise ValueError(f'setting {setting!r}: expected solver:n[:name=value,...]')
  solver, n = parts[:2]
  config = copy.deepcopy(config)  # Keeps the field order (evaluate's fingerprints read it).
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
  try:
    SamplerSettings.from_config(config)
  except ValueError as e:
    raise ValueError(f'setting {setting!r}: {e}') from None
  return config


def setting_dir(setting: str) -> str:
  """A folder name for a setting: 'heun:25:churn=40,tmax=30' -> 'heun-25-churn40_tmax30'."""
  return setting.replace(':', '-').replace(',', '_').replace('=', '')
