"""The XLA:CPU flag: when it is added, and that the pinned jaxlib runs convolutions with it."""
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

import pytest

from score_sde_knee.utils import xla_cpu

FLAG = xla_cpu.FAST_CONV_FLAG
INSTALLED = importlib.metadata.version('jaxlib')


def test_flag_is_added_on_measured_jaxlib_after_the_users_flags():
  assert xla_cpu.with_fast_convolutions('', '0.10.2') == FLAG
  devices = '--xla_force_host_platform_device_count=4'
  assert xla_cpu.with_fast_convolutions(devices, '0.10.2') == f'{devices} {FLAG}'


@pytest.mark.parametrize('version', ['0.9.1', '0.11.0', '1.10.0'])
def test_other_jaxlib_versions_are_left_alone(version):
  # An unknown flag would abort XLA: only versions where it was measured get it.
  assert xla_cpu.with_fast_convolutions('--a=1', version) == '--a=1'


def test_the_users_own_ynn_setting_wins():
  mine = '--xla_cpu_experimental_ynn_fusion_type=+LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'
  assert xla_cpu.with_fast_convolutions(mine, '0.10.2') == mine


def test_configure_edits_the_given_environment_once():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  xla_cpu.configure(env)
  xla_cpu.configure(env)
  expected = INSTALLED.startswith(xla_cpu.MEASURED_JAXLIB)
  assert env['XLA_FLAGS'].count(FLAG) == int(expected)
  assert env['XLA_FLAGS'].startswith('--xla_force_host_platform_device_count=2')
  empty = {}
  xla_cpu.configure(empty)
  assert ('XLA_FLAGS' in empty) == expected


_CONV_CHILD = textwrap.dedent('''
    import json, os
    import numpy as np
    import jax, jax.numpy as jnp
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 12, 12, 16)).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, 8)).astype(np.float32)
    conv = lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = np.asarray(jax.jit(conv)(x, w))
    dw = np.asarray(jax.jit(jax.grad(lambda w: jnp.sum(conv(x, w) ** 2)))(w))
    # float64 reference: 'SAME' cross-correlation written out, and its weight gradient.
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((2, 12, 12, 8))
    for i in range(3):
      for j in range(3):
        ref += np.einsum('bhwc,co->bhwo', xp[:, i:i + 12, j:j + 12], w[i, j])
    dref = np.stack([np.stack([np.einsum('bhwc,bhwo->co', xp[:, i:i + 12, j:j + 12], 2 * ref)
                               for j in range(3)]) for i in range(3)])
    print(json.dumps({'flags': os.environ.get('XLA_FLAGS', ''),
                      'err': float(np.max(np.abs(y - ref))),
                      'grad_rel_err': float(np.max(np.abs(dw - dref)) / np.max(np.abs(dref)))}))
''')


def test_installed_jaxlib_accepts_the_flag_and_convolves_correctly():
  if not INSTALLED.startswith(xla_cpu.MEASURED_JAXLIB):
    pytest.skip(f'jaxlib {INSTALLED} does not get the flag')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  env['XLA_FLAGS'] = FLAG
  env['JAX_PLATFORMS'] = 'cpu'
  done = subprocess.run([sys.executable, '-c', _CONV_CHILD], env=env, capture_output=True,
                        text=True, check=False, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])
  assert out['flags'] == FLAG
  assert out['err'] < 1e-4
  assert out['grad_rel_err'] < 1e-5
