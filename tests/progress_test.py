import io
import logging
import os

import pytest

from score_sde_knee.utils import progress


def test_format_seconds():
  assert progress.format_seconds(5) == '5s'
  assert progress.format_seconds(125) == '2m05s'
  assert progress.format_seconds(3725) == '1h02m05s'


def test_eta_counts_only_this_runs_work(monkeypatch):
  clock = iter([0.0, 10.0, 10.0])
  monkeypatch.setattr(progress.time, 'monotonic', lambda: next(clock))
  out = io.StringIO()
  bar = progress.Progress(100, 'eval', done=50, unit='batch', every=0, stream=out)
  bar.update(10)  # 10 new batches in 10 s -> 1 batch/s, 40 left -> ETA 40 s
  line = out.getvalue().strip()
  assert line.startswith('eval: 60/100 (60%)'), line
  assert 'ETA 40s' in line and '1.00 batch/s' in line


def test_lines_at_most_every_interval_and_always_at_the_end(monkeypatch):
  now = [0.0]
  monkeypatch.setattr(progress.time, 'monotonic', lambda: now[0])
  out = io.StringIO()
  bar = progress.Progress(5, 'sample', unit='image', every=5.0, stream=out)
  for t, force in ((1.0, False), (6.0, False), (8.0, True), (10.0, False), (11.0, False)):
    now[0] = t
    bar.update(force=force)
  # 6 s: 5 s since the start; 8 s: forced; 10 s: 2 s since the last line, none; 11 s: the
  # end, although 3 s since the last line.
  assert out.getvalue().splitlines() == [
      'sample: 2/5 (40%) 3.00 s/image, elapsed 6s, ETA 9s',
      'sample: 3/5 (60%) 2.67 s/image, elapsed 8s, ETA 5s',
      'sample: 5/5 (100%) 2.20 s/image, elapsed 11s, ETA 0s']


def test_a_line_before_any_new_work_has_no_rate(monkeypatch):
  monkeypatch.setattr(progress.time, 'monotonic', lambda: 100.0)
  bar = progress.Progress(10, 'train', done=4, unit='step', stream=io.StringIO())
  assert bar.line(100.0 + 3725) == 'train: 4/10 (40%) elapsed 1h02m05s'


def _absl_record(pathname: str, level: int) -> logging.LogRecord:
  return logging.LogRecord('absl', level, pathname, 1, 'msg', None, None)


@pytest.fixture(name='jax_logger')
def _jax_logger():
  """jax's backend logger, its level restored after the test (quiet_library_info sets it)."""
  jax_logger = logging.getLogger(progress.JAX_BACKEND_LOGGER)
  level = jax_logger.level
  yield jax_logger
  jax_logger.setLevel(level)  # setLevel, not the attribute: it clears the level cache


def test_quiet_library_info_drops_only_library_info(monkeypatch, jax_logger):
  from absl import logging as absl_logging
  logger = absl_logging.get_absl_logger()
  monkeypatch.setattr(logger, 'filters', [])  # restored after the test
  progress.quiet_library_info()
  filters = list(logger.filters)
  progress.quiet_library_info()  # idempotent: no second copy of either filter
  assert logger.filters == filters and len(filters) == 2
  lib = os.path.join(os.sep, 'venv', 'site-packages', 'orbax', 'checkpoint', 'x.py')
  tfds = os.path.join(os.sep, 'venv', 'site-packages', 'tensorflow_datasets', 'w.py')
  own = os.path.join(os.sep, 'repo', 'score_sde_knee', 'train.py')
  assert not logger.filter(_absl_record(lib, logging.INFO))
  assert not logger.filter(_absl_record(tfds, logging.INFO))
  assert logger.filter(_absl_record(lib, logging.WARNING))  # warnings still show
  assert logger.filter(_absl_record(own, logging.INFO))
  # A package whose name merely starts with 'orbax' is not silenced.
  other = os.path.join(os.sep, 'venv', 'site-packages', 'orbaxish', 'x.py')
  assert logger.filter(_absl_record(other, logging.INFO))


def test_quiet_library_info_silences_a_real_orbax_save(tmp_path, monkeypatch, jax_logger):
  import numpy as np
  import orbax.checkpoint as ocp
  from absl import logging as absl_logging
  logger = absl_logging.get_absl_logger()
  monkeypatch.setattr(logger, 'filters', [])
  level = logger.level
  logger.setLevel(logging.INFO)  # setLevel, not an attribute: it clears isEnabledFor's cache
  records = []
  handler = logging.Handler(logging.DEBUG)
  handler.emit = records.append
  logger.addHandler(handler)
  try:
    with ocp.CheckpointManager(tmp_path / 'a') as mngr:
      mngr.save(0, args=ocp.args.StandardSave({'x': np.zeros(3)}))
    loud = [r for r in records if r.levelno < logging.WARNING]
    assert loud, 'orbax logged no INFO lines: this test no longer tests the filter'
    records.clear()
    progress.quiet_library_info()
    with ocp.CheckpointManager(tmp_path / 'b') as mngr:
      mngr.save(0, args=ocp.args.StandardSave({'x': np.zeros(3)}))
    assert [r for r in records if r.levelno < logging.WARNING] == []
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)


def _capture_absl(monkeypatch):
  """absl records that pass the absl logger's filters, with log_first_n's counts reset."""
  from absl import logging as absl_logging
  monkeypatch.setattr(absl_logging, '_log_counter_per_token', {})
  logger = absl_logging.get_absl_logger()
  monkeypatch.setattr(logger, 'filters', [])
  records = []
  handler = logging.Handler(logging.DEBUG)
  handler.emit = records.append
  monkeypatch.setattr(logger, 'handlers', logger.handlers + [handler])  # a new list
  return records


def test_tfds_own_dtype_warning_dropped_but_a_users_kept(monkeypatch, jax_logger):
  import numpy as np
  import tensorflow as tf
  import tensorflow_datasets as tfds
  del jax_logger  # only restored

  def feature():  # a new one each time: TFDS caches `.dtype` after the first read
    return tfds.features.Tensor(shape=(3,), dtype=np.float32,
                                encoding=tfds.features.Encoding.ZLIB)

  encoded = tf.constant(feature().encode_example(np.arange(3, dtype=np.float32)))

  def dtype_warnings(records):
    return [r for r in records if '.dtype` is deprecated' in r.getMessage()]

  records = _capture_absl(monkeypatch)
  np.testing.assert_array_equal(feature().decode_example(encoded).numpy(), [0, 1, 2])
  assert dtype_warnings(records), 'TFDS no longer reads .dtype itself: drop the filter'
  records.clear()
  progress.quiet_library_info()
  np.testing.assert_array_equal(feature().decode_example(encoded).numpy(), [0, 1, 2])
  assert dtype_warnings(records) == []
  assert feature().dtype == tf.float32  # read from outside TFDS: the user is told
  assert len(dtype_warnings(records)) == 1


def test_quiet_library_info_hides_jax_backend_probe_info_only(monkeypatch, jax_logger):
  from absl import logging as absl_logging
  from jax._src import xla_bridge
  monkeypatch.setattr(absl_logging.get_absl_logger(), 'filters', [])
  assert xla_bridge.logger is jax_logger  # jax still logs backend discovery there
  progress.quiet_library_info()
  assert not jax_logger.isEnabledFor(logging.INFO)
  assert jax_logger.isEnabledFor(logging.WARNING)


def test_a_quiet_bar_counts_but_prints_nothing():
  out = io.StringIO()
  bar = progress.Progress(3, 'eval', every=0, stream=out, quiet=True)
  bar.update(2, force=True)
  bar.update(1)
  assert bar.done == 3 and out.getvalue() == ''
