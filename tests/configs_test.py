import importlib

import pytest

from configs import default


@pytest.mark.parametrize('method', ['csm', 'ctm', 'unet'])
def test_default_is_the_paper_setup(method):
  c = importlib.import_module(f'configs.{method}').get_config()
  assert c.method == method and c.condition == 'contour' and c.scale == 'paper'
  assert c.data.image_size == 256 and c.training.batch_size == 16
  assert tuple(c.model.ch_mult) == (1, 2, 2, 2, 2, 4) and c.model.nf == 64
  assert c.sde.sigma_min == 0.01 and c.sde.sigma_max == 128 and c.sde.num_scales == 500
  assert c.sampling.snr == 0.4 and c.sampling.t0 == 0.4
  assert c.model.scale_by_sigma == (method != 'unet')


def test_options_select_condition_and_scale():
  c = importlib.import_module('configs.ctm').get_config('contour_bone,cpu')
  assert c.condition == 'contour_bone' and c.scale == 'cpu'
  assert c.data.builder_config == 'phantom_64' and c.data.image_size == 64
  c = importlib.import_module('configs.unet').get_config(' test ')
  assert c.scale == 'test' and c.condition == 'contour'


def test_unknown_option_is_a_clear_error():
  with pytest.raises(ValueError, match="'bones'.*contour_bone"):
    default.get_config('bones')


def test_config_docstrings_start_with_their_command():
  for m in ('csm', 'ctm', 'unet'):
    doc = importlib.import_module(f'configs.{m}').__doc__
    assert f'--config=configs/{m}.py' in doc.split('\n\n')[1]
