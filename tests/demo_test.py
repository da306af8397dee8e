"""demo: the laptop run is the cpu preset with the `fast` sampler and a few documented
overrides, all valid."""
from configs import ctm
from score_sde_knee import demo
from score_sde_knee import run_config
from score_sde_knee import sampler_setting


def test_demo_config_is_the_cpu_preset_with_only_the_listed_overrides():
  config = demo.demo_config('/data')
  run_config.validate(config)
  preset = sampler_setting.configure(ctm.get_config('contour_bone,cpu'),
                                     sampler_setting.FAST['ctm']).to_dict()
  got = config.to_dict()
  changed = {f'{section}.{field}' for section, fields in got.items()
             if isinstance(fields, dict)
             for field, value in fields.items() if preset[section][field] != value}
  assert changed == {k for k, v in demo.DEMO_OVERRIDES.items()
                     if preset[k.split('.')[0]][k.split('.')[1]] != v} | {'data.data_dir'}
  assert (config.method, config.condition, config.data.data_dir) == (
      'ctm', 'contour_bone', '/data')
  # What the README promises: 350 steps, 49 network evaluations, the 30-image subset.
  assert config.training.num_train_steps == 350
  assert sampler_setting.nfe(config) == 49 and config.eval.view_stride == 6


def test_demo_samples_with_the_fast_preset_by_name(monkeypatch):
  # The demo names the preset instead of copying its fields: a changed preset moves it.
  assert demo.DEMO_SAMPLER == 'fast'
  monkeypatch.setitem(sampler_setting.FAST, 'ctm', 'pc:9:pred=ancestral,nc=3,mom=0.5')
  config = demo.demo_config()
  assert (config.sde.num_scales, config.sampling.n_steps_each, config.sampling.momentum,
          config.sampling.predictor) == (9, 3, 0.5, 'ancestral')
