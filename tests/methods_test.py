"""The method records: each agrees with the network, the configs and the losses it drives."""
import dataclasses
import importlib

import jax
import numpy as np
import pytest

from configs import default
from score_sde_knee import losses
from score_sde_knee import methods
from score_sde_knee import model_utils
from score_sde_knee import run_config
from score_sde_knee import sde as sde_lib


def _config(name):
  return importlib.import_module(f'configs.{name}').get_config('test')


def test_the_three_methods_in_table_order():
  assert methods.NAMES == ('unet', 'csm', 'ctm')
  assert [m.label for m in methods.ALL] == ['U-Net', 'CSM', 'CTM']
  assert methods.CONDITIONS == ('contour', 'contour_bone') == default.CONDITIONS
  for m in methods.ALL:
    assert methods.get(m.name) is m
    with pytest.raises(dataclasses.FrozenInstanceError):
      m.loss = 'l2'


def test_unknown_method_names_the_field_and_the_choices():
  with pytest.raises(ValueError) as e:
    methods.get('ddpm')
  assert str(e.value) == "config.method='ddpm': expected one of ('unet', 'csm', 'ctm')."
  config = _config('ctm')
  config.method = 'ddpm'
  with pytest.raises(ValueError, match=r"config\.method='ddpm': expected one of"):
    run_config.validate(config)


@pytest.mark.parametrize('name,channels', [('unet', 1), ('csm', 1), ('ctm', 2)])
def test_input_channels_are_the_first_convolutions(name, channels):
  # The paper: CSM sees the noisy image, CTM the noisy image and the segmentation, the
  # U-Net the segmentation alone.
  config = _config(name)
  method = methods.get(name)
  assert method.input_channels == channels
  model = model_utils.create_model(config)
  assert model.noise_conditioned == method.noise_conditioned
  shapes = jax.eval_shape(lambda r: model_utils.init_params(model, r, config),
                          jax.random.key(0))
  assert shapes['Conv_0']['kernel'].shape[2] == channels
  assert ('GaussianFourierProjection_0' in shapes) == method.noise_conditioned


@pytest.mark.parametrize('name', methods.NAMES)
def test_each_method_has_its_config_file(name):
  config = importlib.import_module(f'configs.{name}').get_config('contour_bone,test')
  assert config.method == name and config.condition == 'contour_bone'
  run_config.validate(config)


def test_conditions_a_model_can_sample_from():
  # One unconditional CSM serves both; a network that reads the segmentation, the one
  # it was trained on.
  for trained_on in methods.CONDITIONS:
    assert methods.CSM.conditions(trained_on) == ('contour', 'contour_bone')
    assert methods.CTM.conditions(trained_on) == (trained_on,)
    assert methods.UNET.conditions(trained_on) == (trained_on,)


@pytest.mark.parametrize('name', methods.NAMES)
def test_the_loss_is_the_records(name):
  # dsm returns the sampled times with its per-example losses, l1 does not; the batch keys
  # it asks for follow the network's inputs.
  config = _config(name)
  method = methods.get(name)
  model = model_utils.create_model(config)
  params = jax.eval_shape(lambda r: model_utils.init_params(model, r, config),
                          jax.random.key(0))
  loss_fn = losses.get_loss_fn(model, sde_lib.VESDE(0.01, 8.0), config)
  s = config.data.image_size
  image = jax.ShapeDtypeStruct((2, s, s, 1), np.float32)
  _, aux = jax.eval_shape(lambda p, b: loss_fn(p, b, jax.random.key(0), False), params,
                          {'image': image, 'cond': image})
  assert ('t' in aux) == (method.loss == 'dsm')
  if method.cond_input:
    with pytest.raises(ValueError, match="'cond'"):
      jax.eval_shape(lambda p, b: loss_fn(p, b, jax.random.key(0), False), params,
                     {'image': image})


def test_a_record_refuses_unknown_choices():
  with pytest.raises(ValueError, match='loss'):
    methods.Method('x', 'X', True, True, loss='l2', sampling='conditional')
  with pytest.raises(ValueError, match='sampling'):
    methods.Method('x', 'X', True, True, loss='dsm', sampling='ode')
  with pytest.raises(ValueError, match='no input'):
    methods.Method('x', 'X', False, False, loss='l1', sampling='forward')
