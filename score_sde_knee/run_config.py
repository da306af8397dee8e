"""The run's config: from --config, or the one saved in the workdir (eval, sample)."""
import json
import os
import re

import ml_collections

from score_sde_knee import methods
from score_sde_knee import sampler_setting

CONFIG_FILE = 'config.json'

# Fields added after runs were first saved, with the value that reproduces what those runs
# did (= configs/default.py's paper-scale default, checked by the tests, except where
# DEFAULT_CHANGED says otherwise). load() fills them in, so the code reads every field the
# same way whatever version saved the run.
ADDED_FIELDS = {
    'data.version': '1.0.0',
    'data.read_threads': 4,
    'training.compute_dtype': 'float32',
    'training.steps_per_call': 1,
    'sampling.predictor': 'reverse_diffusion',
    'sampling.t_jump': 1.0,
    'sampling.precond': 0.0,
    'sampling.precond_width': 4.0,
    'sampling.momentum': 0.0,
    'sampling.known_air': False,
    'sampling.air_margin': 0,
    'eval.view_stride': 1,
    'eval.condition': '',
}
# Added fields whose default for new runs differs from what the older runs used.
DEFAULT_CHANGED = ('data.version',)  # runs before it was added read knee_drr 1.0.0


def data_spec(config: ml_collections.ConfigDict) -> str:
  """'<builder_config>:<version>' (TFDS's syntax), or the config alone for the newest."""
  version = config.data.get('version', '')
  return f'{config.data.builder_config}:{version}' if version else config.data.builder_config


def _tuples(obj):
  """JSON turns tuples into lists; flax module fields want hashable tuples back."""
  if isinstance(obj, dict):
    return {k: _tuples(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return tuple(_tuples(v) for v in obj)
  return obj


def load(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} not found: --workdir={workdir} holds no trained run. Pass --config, or '
        'point --workdir at a directory written by --mode=train.')
  try:
    with open(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON ({e}); was the run interrupted while '
                     'writing it?') from e
  config = ml_collections.ConfigDict(_tuples(data))
  for dotted, value in ADDED_FIELDS.items():
    node, leaf = _parent(config, dotted)
    if leaf not in node:
      node[leaf] = value
  return config


def _parent(config, dotted: str):
  """(the ConfigDict holding the field `a.b.c`, 'c'); node None if a parent is missing."""
  *parents, leaf = dotted.split('.')
  node = config
  for k in parents:
    node = node[k] if k in node else None
    if node is None:
      break
  return node, leaf


def save(config: ml_collections.ConfigDict, workdir: str) -> None:
  from score_sde_knee.utils import files
  files.write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json()))


def resolve(config, workdir: str | None, mode: str,
            data_dir: str | None = None) -> ml_collections.ConfigDict:
  """--config if given, else the workdir's saved config; --data_dir overrides the data dir."""
  if mode in ('train', 'eval', 'sample') and not workdir:
    raise ValueError(f'--mode={mode} needs --workdir=DIR')
  if config is None:
    if mode in ('build', 'train'):
      raise ValueError(f'--mode={mode} needs --config=configs/<method>.py[:condition,scale]')
    config = load(workdir)
  else:
    config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
  if data_dir:
    config.data.data_dir = data_dir
  validate(config)
  return config


# field -> allowed values: the choices the code dispatches on (the sampler's fields are
# SamplerSettings').
_CHOICES = {
    'method': methods.NAMES,
    'condition': methods.CONDITIONS,
    'eval.condition': ('',) + methods.CONDITIONS,
    'eval.split': ('train', 'validation', 'test'),
    'training.compute_dtype': ('float32', 'bfloat16'),
}
# field -> (lowest, highest, whether the lowest is allowed, whether the highest is),
# None = unbounded.
_RANGES = {
    'data.image_size': (1, None, True, True),
    'data.prefetch': (0, None, True, True),
    'data.read_threads': (0, None, True, True),
    'model.nf': (1, None, True, True),
    'model.num_res_blocks': (1, None, True, True),
    'sde.sigma_min': (0.0, None, False, True),
    'sde.num_scales': (1, None, True, True),
    'training.batch_size': (1, None, True, True),
    'training.num_train_steps': (1, None, True, True),
    'optim.lr': (0.0, None, False, True),
    'eval.batch_size': (1, None, True, True),
    'eval.num_images': (0, None, True, True),
    'eval.view_stride': (1, None, True, True),
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses a config value the code cannot use, naming the field and what it expects.

  Raises:
    ValueError: a field outside its choices or range, or inconsistent fields.
  """
  def get(dotted):
    node, leaf = _parent(config, dotted)
    # A config built in code without the field: nothing to check.
    return node[leaf] if node is not None and leaf in node else None

  version = get('data.version')
  if version and not re.fullmatch(r'\d+\.\d+\.\d+', str(version)):
    raise ValueError(f'config.data.version={version!r}: expected a knee_drr version such as '
                     "'1.1.0', or '' for the newest.")
  for field, choices in _CHOICES.items():
    value = get(field)
    if value is not None and value not in choices:
      raise ValueError(f'config.{field}={value!r}: expected one of {choices}.')
  for field, (lo, hi, closed, hi_closed) in _RANGES.items():
    value = get(field)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f'config.{field}={value!r}: expected a number.')
    if (value < lo or (value == lo and not closed)) or (
        hi is not None and (value > hi or (value == hi and not hi_closed))):
      bound = f'>= {lo}' if closed else f'> {lo}'
      upper = '' if hi is None else f' and <= {hi}' if hi_closed else f' and < {hi}'
      raise ValueError(f'config.{field}={value!r}: expected a value {bound}{upper}.')
  if 'sampling' in config:
    # The sampler's fields are checked where they are defined, once.
    sampler_setting.SamplerSettings.check_config(config)
  if config.sde.sigma_max <= config.sde.sigma_min:
    raise ValueError(f'config.sde.sigma_max={config.sde.sigma_max!r} must exceed '
                     f'config.sde.sigma_min={config.sde.sigma_min!r}.')
  levels = len(config.model.ch_mult)
  if config.data.image_size % 2 ** (levels - 1):
    raise ValueError(
        f'config.data.image_size={config.data.image_size} must be divisible by '
        f'{2 ** (levels - 1)}: the model halves it {levels - 1} times '
        f'(config.model.ch_mult={tuple(config.model.ch_mult)}).')
