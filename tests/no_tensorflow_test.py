"""Training, evaluation and sampling run where TensorFlow is not installed.

main.py runs in a Python that sees every installed package but TensorFlow: `python -S`
(no site-packages) plus a folder of links to each entry of site-packages except
tensorflow's own. knee_drr is built beforehand (building may use TensorFlow) and read
through Grain; TensorBoard events come from the TensorFlow-free writer.
"""
import os
import re
import site
import subprocess
import sys

import pytest

from helpers import TINY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tensorflow, tensorflow-2.x.dist-info, tensorflow_cpu-2.x.dist-info, tensorflow_io_*;
# not tensorflow_datasets nor tensorflow_metadata.
_TENSORFLOW = re.compile(r'^tensorflow(-|_cpu|_io|$)')

_DRIVER = """
import importlib.util
import site
import sys
site.addsitedir({overlay!r})
sys.path.insert(0, {repo!r})
if importlib.util.find_spec('tensorflow') is not None:
  raise SystemExit('tensorflow is importable: the test would prove nothing')
from absl import app
from datasets.knee_drr import knee_drr_dataset_builder as kb
kb.Builder.BUILDER_CONFIGS.append(kb.KneeDrrConfig(
    name={name!r}, num_patients={num_patients}, detector={detector},
    num_views={num_views}, spacing_mm={spacing_mm}))
import main
app.run(main.main, flags_parser=main.parse_flags)
"""


@pytest.fixture(scope='module')
def driver(tmp_path_factory):
  root = tmp_path_factory.mktemp('no_tensorflow')
  overlay = root / 'site-packages'
  overlay.mkdir()
  hidden = []
  for site_dir in site.getsitepackages():
    if not os.path.isdir(site_dir):
      continue
    for name in sorted(os.listdir(site_dir)):
      if _TENSORFLOW.match(name):
        hidden.append(name)
      elif not (overlay / name).exists():
        os.symlink(os.path.join(site_dir, name), overlay / name)
  assert 'tensorflow' in hidden  # else the environment has no TensorFlow to hide
  path = root / 'driver.py'
  path.write_text(_DRIVER.format(overlay=str(overlay), repo=REPO, name=TINY.name,
                                 num_patients=TINY.num_patients, detector=TINY.detector,
                                 num_views=TINY.num_views, spacing_mm=TINY.spacing_mm))
  return str(path)


def _run(driver, *args, returncode=0):
  env = dict(os.environ, PYTHONPATH=REPO)
  done = subprocess.run([sys.executable, '-S', driver, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == returncode, done.stderr[-4000:]
  return done


def test_train_eval_and_sample_without_tensorflow(tmp_path, driver, data_dir):
  workdir, out = str(tmp_path / 'run'), str(tmp_path / 'samples')
  _run(driver, '--mode=train', '--config=configs/ctm.py:contour_bone,test',
       f'--workdir={workdir}', f'--data_dir={data_dir}',
       f'--config.data.builder_config={TINY.name}',
       '--config.training.num_train_steps=4', '--config.training.checkpoint_every=2')
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '4', 'data'))  # Grain state
  events = [f for f in os.listdir(workdir) if f.startswith('events.out.tfevents')]
  assert events and os.path.getsize(os.path.join(workdir, events[0])) > 0
  # A resume (more steps) restores the Grain iterator from the checkpoint.
  _run(driver, '--mode=train', '--config=configs/ctm.py:contour_bone,test',
       f'--workdir={workdir}', f'--data_dir={data_dir}',
       f'--config.data.builder_config={TINY.name}',
       '--config.training.num_train_steps=6', '--config.training.checkpoint_every=2')
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '6', 'data'))
  _run(driver, '--mode=eval', f'--workdir={workdir}', f'--data_dir={data_dir}')
  assert os.path.exists(os.path.join(workdir, 'eval', 'metrics.json'))
  _run(driver, '--mode=sample', f'--workdir={workdir}', f'--data_dir={data_dir}',
       '--masks=test', f'--out={out}')
  assert any(f.endswith('.png') for f in os.listdir(out))
  # Writing a TFDS data set is a build, which needs TensorFlow: said up front, one line.
  done = _run(driver, '--mode=sample', f'--workdir={workdir}', f'--data_dir={data_dir}',
              '--masks=test', f'--out={tmp_path / "other"}',
              f'--export_tfds={tmp_path / "tfds"}', returncode=2)
  assert done.stderr.startswith('error: --export_tfds writes a TFDS data set, which needs '
                                'TensorFlow')
  assert not os.path.exists(tmp_path / 'other')
