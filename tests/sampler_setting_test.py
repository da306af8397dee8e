"""sampler_setting: SamplerSettings, the `solver:n[:name=value,...]` syntax, the presets,
and their errors."""
import dataclasses
import math

import pytest

from configs import csm
from configs import ctm
from configs import default
from configs import unet
from score_sde_knee import sampler_setting
from score_sde_knee.sampler_setting import SamplerSettings


def test_configure_sets_solver_steps_and_options():
  base = ctm.get_config('contour,cpu')
  c = sampler_setting.configure(base, 'heun:12:churn=10,tmin=0.05,tmax=8,snoise=1.003')
  assert (c.sampling.method, c.sampling.ode_steps) == ('heun', 12)
  assert (c.sampling.s_churn, c.sampling.s_tmin, c.sampling.s_tmax,
          c.sampling.s_noise) == (10.0, 0.05, 8.0, 1.003)
  pc = sampler_setting.configure(base, 'pc:50:snr=0.2')
  assert (pc.sampling.method, pc.sde.num_scales, pc.sampling.snr) == ('pc', 50, 0.2)
  anc = sampler_setting.configure(base, 'pc:25:pred=ancestral')
  assert (anc.sde.num_scales, anc.sampling.predictor) == (25, 'ancestral')
  more = sampler_setting.configure(base, 'pc:10:nc=4')
  assert more.sampling.n_steps_each == 4 and isinstance(more.sampling.n_steps_each, int)
  assert sampler_setting.configure(base, 'pc:25:t0=0.6').sampling.t0 == 0.6
  assert sampler_setting.configure(base, 'pc:25:jump=0.74').sampling.t_jump == 0.74
  pre = sampler_setting.configure(base, 'pc:25:pre=3,prew=16').sampling
  assert (pre.precond, pre.precond_width) == (3.0, 16.0)
  assert sampler_setting.configure(base, 'pc:17:mom=0.8').sampling.momentum == 0.8
  assert sampler_setting.configure(base, 'pc:500:air=1').sampling.known_air is True
  assert sampler_setting.configure(base, 'pc:500:air=0').sampling.known_air is False
  assert sampler_setting.configure(base, 'pc:500:air=1,airm=2').sampling.air_margin == 2
  assert base.sampling.method == 'pc' and base.sampling.s_churn == 0.0  # copy, not edit


@pytest.mark.parametrize('setting, match', [
    ('heun', 'solver:n'), ('heun:18:churn', 'churn'), ('heun:18:speed=2', 'speed'),
    ('heun:18:churn=-1', 's_churn'), ('pc:25:pred=ddim', 'predictor'),
    ('heun:18:churn=lots', 'churn=.lots. is not a number'),
    ('pc:10:nc=2.5', 'an integer'), ('pc:25:jump=0', 't_jump'),
    ('pc:many', "step count 'many' is not an integer"), ('euler:10', 'solver'),
    ('pc:25:prew=0', 'precond_width'), ('pc:0', 'n_steps=0'),
    ('pc:25:mom=1', 'momentum=1.0: expected a value >= 0.0 and < 1.0'),
    ('pc:25:air=yes', "air='yes' must be 0 or 1"), ('pc:25:airm=-1', 'air_margin=-1'),
    ('heun:18:air=1', "known_air=True: expected False with solver 'heun'")])
def test_configure_rejects_bad_settings(setting, match):
  with pytest.raises(ValueError, match=match):
    sampler_setting.configure(ctm.get_config('contour,cpu'), setting)


@pytest.mark.parametrize('config, snr', [(ctm.get_config('contour_bone,cpu'), 0.5),
                                         (csm.get_config('contour,cpu'), 0.4)])
def test_fast_is_49_evaluations_with_the_methods_snr(config, snr, capsys):
  got, setting = sampler_setting.apply(config, 'fast', config.condition)
  assert setting == sampler_setting.FAST[config.method]
  # 17 predictor steps and 2 corrector steps at each of the 16 levels above sigma_min.
  assert sampler_setting.nfe(got) == 17 + 16 * 2
  s = got.sampling
  assert (got.sde.num_scales, s.predictor, s.n_steps_each, s.snr, s.momentum) == (
      17, 'ancestral', 2, snr, 0.8)
  assert s.t0 == config.sampling.t0  # CSM keeps the paper's SDEdit start
  assert f'{setting}: 49 network evaluations per image' in capsys.readouterr().err


def test_resolve_passes_settings_and_refuses_unet_and_unknown_names():
  assert sampler_setting.resolve('csm', 'pc:100', 'contour') == 'pc:100'
  with pytest.raises(ValueError, match='U-Net.*CTM and CSM'):
    sampler_setting.apply(unet.get_config('contour,cpu'), 'fast', 'contour')
  with pytest.raises(ValueError, match=r"--sampler=quick: expected one of \('paper', 'fast', "
                                       r"'fast-air'\)"):
    sampler_setting.resolve('ctm', 'quick', 'contour')
  with pytest.raises(ValueError, match=r"fast-air: condition 'bone' has no air margin"):
    sampler_setting.resolve('csm', 'fast-air', 'bone')


@pytest.mark.parametrize('method, get', [('csm', csm.get_config), ('ctm', ctm.get_config)])
@pytest.mark.parametrize('condition, ring', [('contour_bone', 1), ('contour', 2)])
def test_fast_air_is_fast_with_the_air_held_but_the_conditions_ring(method, get, condition,
                                                                     ring):
  # The margins RESULTS.md chose on validation images ("`fast-air`").
  setting = sampler_setting.resolve(method, 'fast-air', condition)
  assert setting.startswith(sampler_setting.FAST[method] + ',')
  s = sampler_setting.configure(get(f'{condition},cpu'), setting).sampling
  assert (s.known_air, s.air_margin, s.momentum) == (True, ring, 0.8)
  fast = sampler_setting.resolve(method, 'fast', condition)
  assert sampler_setting.configure(get(f'{condition},cpu'), fast).sampling.known_air is False


def test_setting_dir_is_a_plain_folder_name():
  assert sampler_setting.setting_dir('heun:25:churn=40,tmax=30') == 'heun-25-churn40_tmax30'
  assert '/' not in sampler_setting.setting_dir(sampler_setting.FAST['ctm'])


def test_expand_names_fast_per_method_and_keeps_other_strings():
  assert sampler_setting.expand('csm', 'fast', 'contour') == sampler_setting.FAST['csm']
  assert sampler_setting.expand('ctm', 'fast', 'contour') == sampler_setting.FAST['ctm']
  assert sampler_setting.expand('csm', 'fast-air', 'contour').endswith(',airm=2')
  assert sampler_setting.expand('unet', 'pc:2', 'contour') == 'pc:2'  # a U-Net ignores it
  with pytest.raises(ValueError, match='this run is a U-Net'):
    sampler_setting.expand('unet', 'fast', 'contour')


def test_paper_is_pc_500_with_the_papers_corrector_whatever_the_run_samples_with():
  paper = default.get_config('cpu', method='ctm')
  fast = sampler_setting.configure(paper, sampler_setting.FAST['ctm'])
  for base in (paper, fast):
    setting = sampler_setting.resolve('ctm', 'paper', 'contour')
    assert setting == sampler_setting.PAPER
    got = SamplerSettings.from_config(sampler_setting.configure(base, setting))
    assert got == SamplerSettings(n_steps=500)  # configs/default.py's: the paper's
    assert got.nfe == 999
  assert sampler_setting.setting_dir(sampler_setting.PAPER).startswith('pc-500-')


def test_settings_from_the_default_config_are_the_dataclass_defaults():
  # SamplerSettings' defaults restate configs/default.py's sampling fields.
  config = default.get_config('paper', method='csm')
  assert SamplerSettings.from_config(config) == SamplerSettings()
  config.sampling.method = 'heun'
  assert SamplerSettings.from_config(config) == SamplerSettings(solver='heun', n_steps=18)
  assert SamplerSettings().s_tmax == math.inf


@pytest.mark.parametrize('field, value, match', [
    ('solver', 'euler', r"solver='euler': expected one of \('pc', 'heun', 'dpm2'\)"),
    ('order', 'sideways', 'order'), ('predictor', 'ddim', 'predictor'),
    ('per_sample_step', 1, 'per_sample_step=1: expected True or False'),
    ('n_steps', 2.0, 'n_steps=2.0: expected an integer >= 1'),
    ('n_steps_each', -1, 'n_steps_each'), ('snr', -0.1, 'snr'), ('eps', 0.0, 'eps'),
    ('t0', 1.5, 't0'), ('t_jump', 1e-6, 't_jump'), ('precond', -1.0, 'precond'),
    ('precond_width', 0.0, 'precond_width'), ('momentum', 1.0, 'momentum'),
    ('rho', 0.0, 'rho'), ('s_churn', -1.0, 's_churn'), ('s_noise', -1.0, 's_noise'),
    ('air_margin', -1, 'air_margin')])
def test_settings_refuse_values_the_samplers_cannot_use(field, value, match):
  with pytest.raises(ValueError, match=match):
    dataclasses.replace(SamplerSettings(), **{field: value})


def test_nfe_counts_per_solver_and_order():
  assert SamplerSettings(n_steps=10, n_steps_each=2).nfe == 10 + 9 * 2
  assert SamplerSettings(n_steps=10, n_steps_each=2, order='corrector_first').nfe == 30
  assert SamplerSettings(n_steps=10, n_steps_each=2, snr=0.0).nfe == 10
  assert SamplerSettings(solver='dpm2', n_steps=10).nfe == 19
  assert sampler_setting.nfe(unet.get_config('contour,cpu')) == 1
