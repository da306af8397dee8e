"""demo: the laptop run is the cpu preset plus a few documented overrides, all valid."""
from configs import ctm
from score_sde_knee import demo
from score_sde_knee import fast_sampling
from score_sde_knee import run_config


def test_demo_config_is_the_cpu_preset_with_only_the_listed_overrides():
  config = demo.demo_config('/data')
  run_config.validate(config)
  preset = ctm.get_config('contour_bone,cpu').to_dict()
  got = config.to_dict()
  changed = {f'{section}.{field}' for section, fields in got.items()
             if isinstance(fields, dict)
             for field, value in fields.items() if preset[section][field] != value}
  assert changed == {k for k, v in demo.DEMO_OVERRIDES.items()
                     if preset[k.split('.')[0]][k.split('.')[1]] != v} | {'data.data_dir'}
  assert (config.method, config.condition, config.data.data_dir) == (
      'ctm', 'contour_bone', '/data')
  # What the README promises: 700 steps, PC with N = 100, the 30-image subset.
  assert config.training.num_train_steps == 700 and config.sde.num_scales == 100
  assert fast_sampling.nfe(config) == 199 and config.eval.view_stride == 6
