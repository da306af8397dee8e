"""The run's config: from --config, or the one saved in the workdir (eval, sample)."""
import json
import os

import ml_collections

CONFIG_FILE = 'config.json'


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
  return ml_collections.ConfigDict(_tuples(data))


def save(config: ml_collections.ConfigDict, workdir: str) -> None:
  from score_sde_knee import files
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
  return config
