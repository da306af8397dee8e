"""Reliability: training killed with SIGKILL and restarted ends bit-identical to one
uninterrupted run; a killed data build shows no partial data and completes on a re-run;
user errors through main.py are one line `error: ...` with exit code 2.

The runs are real `main.py` processes. A tiny knee_drr config is registered by a driver
script (`_DRIVER`) before main.py parses its flags, so `--config.data.builder_config`
can name it.
"""
import os
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import ctm
from datasets.knee_drr import knee_drr_dataset_builder as kb
from score_sde_knee import train
from helpers import TINY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8

_DRIVER = f"""
import sys
sys.path.insert(0, {REPO!r})
from absl import app
from datasets.knee_drr import knee_drr_dataset_builder as kb
kb.Builder.BUILDER_CONFIGS.append(kb.KneeDrrConfig(
    name={TINY.name!r}, num_patients={TINY.num_patients}, detector={TINY.detector},
    num_views={TINY.num_views}, spacing_mm={TINY.spacing_mm}))
import main
app.run(main.main, flags_parser=main.parse_flags)
"""


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """Environment of the subprocesses: one shared JAX compilation cache, quiet TF."""
  e = dict(os.environ)
  e.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('jax_cache')),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', TF_CPP_MIN_LOG_LEVEL='2',
           PYTHONPATH=REPO)
  return e


@pytest.fixture(scope='module')
def driver(tmp_path_factory):
  path = tmp_path_factory.mktemp('driver') / 'driver.py'
  path.write_text(_DRIVER)
  return str(path)


def _train_args(driver, workdir, data_dir, *extra):
  return [sys.executable, driver, '--mode=train', '--config=configs/ctm.py:test',
          f'--workdir={workdir}', f'--data_dir={data_dir}',
          f'--config.data.builder_config={TINY.name}',
          f'--config.training.num_train_steps={STEPS}', *extra]


def _steps_on_disk(workdir) -> list[int]:
  steps = []
  for sub in ('checkpoints', 'preemption'):
    d = os.path.join(workdir, sub)
    if os.path.isdir(d):
      steps += [int(n) for n in os.listdir(d) if n.isdigit()]
  return steps


def _final_state(workdir):
  """The step-STEPS checkpoint as a tree of numpy arrays (no target needed)."""
  path = os.path.join(workdir, 'checkpoints', str(STEPS), 'default')
  checkpointer = ocp.PyTreeCheckpointer()
  # As numpy, so orbax needs no sharding (without one it warns and reads the saved one).
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          checkpointer.metadata(path).item_metadata.tree)
  return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


@pytest.fixture(scope='module')
def reference(tmp_path_factory, driver, data_dir, env):
  """An uninterrupted run that saves only its last step (saving must not perturb it)."""
  ref = str(tmp_path_factory.mktemp('reference'))
  done = subprocess.run(
      _train_args(driver, ref, data_dir, '--config.training.preemption_every=0',
                  '--config.training.checkpoint_every=0'),
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert _steps_on_disk(ref) == [STEPS]
  return ref


def test_sigkilled_training_resumes_bit_exactly(tmp_path, driver, data_dir, env,
                                                reference):
  run = str(tmp_path / 'killed')
  rng = random.Random(0)
  target = 0
  for kill in range(2):
    target = rng.randint(target + 1, target + 3)  # kill once step `target` is on disk
    proc = subprocess.Popen(_train_args(driver, run, data_dir), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      deadline = time.monotonic() + 240
      while max(_steps_on_disk(run), default=0) < target and proc.poll() is None:
        assert time.monotonic() < deadline, 'training made no progress'
        time.sleep(0.005)
      time.sleep(rng.uniform(0.0, 0.05))  # land mid-step or mid-save
      assert proc.poll() is None, f'the run ended before kill {kill + 1} (step {target})'
      proc.send_signal(signal.SIGKILL)
    finally:
      proc.kill()
      proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert max(_steps_on_disk(run)) < STEPS
  done = subprocess.run(_train_args(driver, run, data_dir), cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]

  a, b = _final_state(reference), _final_state(run)
  assert int(np.asarray(b['step'])) == STEPS
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 4
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_killed_data_build_shows_nothing_and_completes_on_rerun(tmp_path, env):
  cfg = kb.KneeDrrConfig(name='tiny_killed_build', num_patients=8, detector=16,
                         num_views=6, spacing_mm=8.0)
  root = str(tmp_path / 'tfds')
  script = tmp_path / 'build.py'
  script.write_text(
      f'import sys\nsys.path.insert(0, {REPO!r})\n'
      'from datasets.knee_drr import knee_drr_dataset_builder as kb\n'
      f'kb.Builder(config=kb.KneeDrrConfig(name={cfg.name!r}, num_patients=8, detector=16, '
      f'num_views=6, spacing_mm=8.0), data_dir={root!r}).download_and_prepare()\n')

  def cached():
    found = []
    for d, _, names in os.walk(os.path.join(root, 'knee_drr_cache')):
      found += [os.path.join(d, n) for n in names
                if n.endswith('.npz') and not n.startswith('.tmp')]
    return sorted(found)

  proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 120
    while not cached() and proc.poll() is None:
      assert time.monotonic() < deadline, 'the build wrote no patient'
      time.sleep(0.005)
    assert proc.poll() is None, 'the build ended before it could be killed'
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  done_before = cached()
  assert 1 <= len(done_before) < cfg.num_patients
  mtimes = {p: os.stat(p).st_mtime_ns for p in done_before}
  assert not kb.Builder(config=cfg, data_dir=root).is_prepared()
  with pytest.raises(AssertionError, match='could not find data'):
    kb.Builder(config=cfg, data_dir=root).as_dataset(split='train')

  builder = kb.Builder(config=cfg, data_dir=root)
  builder.download_and_prepare()
  assert kb.Builder(config=cfg, data_dir=root).is_prepared()
  assert {p: os.stat(p).st_mtime_ns for p in done_before} == mtimes  # reused, not redone
  assert len(cached()) == cfg.num_patients
  splits = builder.info.splits
  assert [splits[k].num_examples for k in ('train', 'validation', 'test')] == [36, 6, 6]


# --- User errors through main.py ---------------------------------------------------------


@pytest.mark.parametrize('args, message', [
    (['--config=configs/ctm.py:bones'], r"Unknown config option 'bones'.*contour_bone"),
    (['--config=configs/ctm.py:test', '--config.training.bogus=1'],
     r"unknown config field --config\.training\.bogus.*'bogus'"),
    (['--config=configs/ctm.py:test', '--workdir={tmp}/w', '--data_dir={tmp}/empty',
      f'--config.data.builder_config={TINY.name}'],
     rf'knee_drr/{TINY.name}:2\.0\.0 is not built in .*empty.*'
     rf'python -m datasets\.knee_drr\.build {TINY.name}:2\.0\.0 --data_dir .*empty'),
    (['--config=configs/ctm.py:test', '--config.training.batch_size=abc'],
     r'flag --config\.training\.batch_size=abc: .*abc'),
    (['--config=configs/ctm.py:test', '--config.sampling.method=euler'],
     r"config\.sampling\.method='euler': expected one of \('pc', 'heun', 'dpm2'\)"),
    (['--config=configs/ctm.py:test', '--workdir={tmp}/file.txt/sub'],
     r'Cannot create the workdir .*file\.txt/sub: Not a directory'),
    (['--config=configs/ctm.py:test', '--step=3'],
     r'--step applies to --mode=eval only, not --mode=train'),
    (['--config=configs/ctm.py:test', '--sampler=fast'],
     r'--sampler applies to --mode=eval and --mode=sample only, not --mode=train'),
    (['--config=configs/ctm.py:test', '--views=all'],
     r'--views applies to --mode=sample only, not --mode=train'),
])
def test_user_errors_are_one_line_and_exit_code_2(tmp_path, driver, env, args, message):
  (tmp_path / 'file.txt').write_text('not a directory')
  args = [a.format(tmp=tmp_path) for a in args]
  if not any(a.startswith('--workdir') for a in args):
    args.append(f'--workdir={tmp_path}/w')
  done = subprocess.run([sys.executable, driver, '--mode=train', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-3000:]
  lines = done.stderr.strip().splitlines()
  errors = [line for line in lines if line.startswith('error: ')]
  assert len(errors) == 1 and lines[-2:] == [errors[0], lines[-1]], done.stderr[-3000:]
  assert 'Traceback' not in done.stderr
  assert re.search(message, errors[0]), errors[0]


def test_unwritable_workdir_is_a_clear_error(tmp_path, monkeypatch):
  # Tests may run as root, for whom chmod 0o500 blocks nothing: fake the access check.
  real_access = os.access
  monkeypatch.setattr(os, 'access', lambda p, mode: (
      False if os.fspath(p) == str(tmp_path) else real_access(p, mode)))
  with pytest.raises(PermissionError, match=f'{tmp_path} is not writable'):
    train.train_and_evaluate(ctm.get_config('test'), str(tmp_path))
