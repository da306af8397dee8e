"""run_config: saved configs round-trip; validate() names the bad field and what it wants."""
import importlib
import json

import pytest

from configs import default
from score_sde_knee import methods
from score_sde_knee import run_config


@pytest.mark.parametrize('method', methods.NAMES)
@pytest.mark.parametrize('scale', default.SCALES)
def test_every_shipped_config_is_valid(method, scale):
  for condition in default.CONDITIONS:
    run_config.validate(importlib.import_module(f'configs.{method}').get_config(
        f'{condition},{scale}'))


@pytest.mark.parametrize('field, value, message', [
    ('sampling.method', 'euler', r"config\.sampling\.method='euler': expected one of "
                                 r"\('pc', 'heun', 'dpm2'\)"),
    ('method', 'ddpm', r"config\.method='ddpm': expected one of"),
    ('training.batch_size', 0, r'config\.training\.batch_size=0: expected a value >= 1\.'),
    ('sampling.t0', 1.5, r'config\.sampling\.t0=1\.5: expected a value > 0 and <= 1'),
    ('sampling.t0', 0.0, r'config\.sampling\.t0=0\.0: expected a value > 0'),
    ('sampling.snr', 'high', r"config\.sampling\.snr='high': expected a number"),
    ('sampling.n_steps_each', -1, r'config\.sampling\.n_steps_each=-1: expected an integer >= 0'),
    ('optim.lr', 'fast', r"config\.optim\.lr='fast': expected a number"),
    ('eval.view_stride', 0, r'config\.eval\.view_stride=0'),
    ('sampling.s_churn', -1.0, r'config\.sampling\.s_churn=-1\.0: expected a value >= 0'),
    ('sampling.rho', 0.0, r'config\.sampling\.rho=0\.0: expected a value > 0'),
    ('sampling.momentum', 1.0, r'config\.sampling\.momentum=1\.0: expected a value >= 0\.0 '
                               r'and < 1\.0\.'),
    ('sampling.predictor', 'euler', r"config\.sampling\.predictor='euler': expected one of"),
    ('sampling.known_air', 1, r'config\.sampling\.known_air=1: expected True or False'),
    ('sde.sigma_max', 0.005, r'sigma_max=0\.005 must exceed config\.sde\.sigma_min=0\.01'),
    ('data.image_size', 60, r'image_size=60 must be divisible by 32: .*halves it 5 times'),
])
def test_bad_values_name_the_field(field, value, message):
  config = default.get_config('contour,paper')
  section, name = field.split('.') if '.' in field else (None, field)
  target = config[section] if section else config
  with target.ignore_type():
    target[name] = value
  with pytest.raises(ValueError, match=message):
    run_config.validate(config)


def test_saved_config_round_trips_and_old_ones_still_validate(tmp_path):
  config = default.get_config('contour_bone,cpu')
  run_config.save(config, str(tmp_path))
  loaded = run_config.load(str(tmp_path))
  assert loaded.model.ch_mult == (1, 2, 2, 2) and loaded.condition == 'contour_bone'
  resolved = run_config.resolve(None, str(tmp_path), 'eval', data_dir='/d')
  assert resolved.data.data_dir == '/d' and resolved.to_dict() == json_dict(config, '/d')


def test_fields_missing_from_older_saved_configs_get_their_defaults(tmp_path):
  config = default.get_config('contour,cpu')
  config.eval.view_stride = 6
  saved = json.loads(config.to_json())
  for dotted in run_config.ADDED_FIELDS:  # as a run saved before these fields existed
    section, leaf = dotted.split('.')
    del saved[section][leaf]
  with open(tmp_path / run_config.CONFIG_FILE, 'w') as f:
    json.dump(saved, f)
  loaded = run_config.load(str(tmp_path))
  paper = default.get_config('contour,paper')  # the defaults those runs were trained with
  for dotted in run_config.ADDED_FIELDS:
    section, leaf = dotted.split('.')
    if dotted in run_config.DEFAULT_CHANGED:
      assert loaded[section][leaf] != paper[section][leaf], dotted
    else:
      assert loaded[section][leaf] == paper[section][leaf], dotted
  # Runs saved before data.version existed were trained on knee_drr 1.0.0: they read it.
  assert loaded.data.version == '1.0.0' and paper.data.version == '2.0.0'
  assert run_config.data_spec(loaded) == 'phantom_64:1.0.0'
  run_config.validate(loaded)
  # A field the run did save keeps its value (only missing ones are filled).
  saved['eval']['view_stride'] = 6
  with open(tmp_path / run_config.CONFIG_FILE, 'w') as f:
    json.dump(saved, f)
  assert run_config.load(str(tmp_path)).eval.view_stride == 6


def json_dict(config, data_dir):
  d = config.to_dict()
  d['data']['data_dir'] = data_dir
  return d


def test_data_spec_and_version_check():
  config = default.get_config('contour,cpu')
  assert run_config.data_spec(config) == 'phantom_64:2.0.0'
  config.data.version = ''
  assert run_config.data_spec(config) == 'phantom_64'  # TFDS: the newest version
  run_config.validate(config)
  config.data.version = 'v1'
  with pytest.raises(ValueError, match=r"config.data.version='v1': expected a knee_drr "
                                       r"version such as '1.1.0'"):
    run_config.validate(config)
