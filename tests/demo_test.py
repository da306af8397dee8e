"""demo: the laptop run is the cpu preset plus a few documented overrides, all valid."""
from configs import ctm
from score_sde_knee import demo
from score_sde_knee import fast_sampling
from score_sde_knee import run_config
from score_sde_knee import sampler_setting


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
  # What the README promises: 350 steps, 49 network evaluations, the 30-image subset.
  assert config.training.num_train_steps == 350
  assert fast_sampling.nfe(config) == 49 and config.eval.view_stride == 6


def test_demo_sampler_is_the_setting_measured_in_results():
  # benchmarks/RESULTS.md reports this setting string; the demo must run the same sampler
  # as --sampler=fast does.
  setting = 'pc:17:pred=ancestral,nc=2,snr=0.5,pre=2.5,prew=4,jump=0.65,mom=0.8'
  assert sampler_setting.FAST['ctm'] == setting
  measured = sampler_setting.configure(ctm.get_config('contour_bone,cpu'), setting)
  config = demo.demo_config()
  assert config.sampling.to_dict() == measured.sampling.to_dict()
  assert config.sde.to_dict() == measured.sde.to_dict()
