"""Input pipeline: epochs are permutations, the stream resumes at any step, the tfds path
yields per-host {'image', 'cond'} batches resized by area averaging, and load_split keeps
every n-th view of each patient."""
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import ctm
from score_sde_knee import input_pipeline
from helpers import TINY


def _stream(n, per_host, start_step, seed=3, process_index=0, num_batches=12):
  base = tf.data.Dataset.range(n).map(lambda i: {'i': i})
  ds = input_pipeline.train_stream(base, n, per_host=per_host, seed=seed,
                                   start_step=start_step, process_index=process_index,
                                   shuffle_buffer=n)
  return np.stack([b['i'] for b in ds.take(num_batches).as_numpy_iterator()])


def test_every_epoch_is_a_permutation_and_epochs_differ():
  n, per_host = 10, 3
  flat = _stream(n, per_host, 0).reshape(-1)           # 36 examples: 3 epochs and a bit
  epochs = [flat[e * n:(e + 1) * n] for e in range(3)]
  for e in epochs:
    np.testing.assert_array_equal(np.sort(e), np.arange(n))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[0], np.arange(n))    # shuffled at all


def test_stream_is_deterministic_and_resumes_at_any_step():
  n, per_host = 10, 3
  full = _stream(n, per_host, 0, num_batches=15)
  np.testing.assert_array_equal(full, _stream(n, per_host, 0, num_batches=15))
  for start in (1, 3, 4, 7):                            # 7 * 3 = 21: inside epoch 2
    np.testing.assert_array_equal(_stream(n, per_host, start, num_batches=15 - start),
                                  full[start:])


def test_seed_and_host_change_the_order():
  a = _stream(10, 2, 0)
  assert not np.array_equal(a, _stream(10, 2, 0, seed=4))
  assert not np.array_equal(a, _stream(10, 2, 0, process_index=1))


def test_stream_runs_without_the_autotuner():
  # Deleting an iterator waits for tf.data's autotuner thread, up to ~1 min (seen in
  # the CPU demo): the streams must not start one.
  base = tf.data.Dataset.range(8).map(lambda i: {'i': i})
  ds = input_pipeline.train_stream(base, 8, per_host=2, seed=0, start_step=0)
  assert ds.options().autotune.enabled is False
  assert ds.options().deterministic is True
  assert tf.data.Options().autotune.enabled is not False  # the default would start one
  # The validation stream starts from the TFDS read, as the training stream does.
  config = _config()
  with tfds.testing.mock_data(num_examples=6):
    read = input_pipeline._read(input_pipeline._builder(config), 'validation', config)
  assert read.options().autotune.enabled is False


def test_empty_shard_is_an_error():
  with pytest.raises(ValueError, match='empty'):
    input_pipeline.train_stream(tf.data.Dataset.range(0), 0, per_host=1, seed=0,
                                start_step=0)


def _config(condition='contour'):
  c = ctm.get_config(f'{condition},test')
  c.training.batch_size = 4
  c.training.eval_batches = 2
  return c


def _block_mean(x, size):
  """Area resize by an integer factor: mean over (f x f) blocks, float64."""
  h = x.shape[0]
  f = h // size
  return x.astype(np.float64).reshape(size, f, size, f, -1).mean(axis=(1, 3))


@pytest.mark.parametrize('condition', ['contour', 'contour_bone'])
def test_create_datasets_on_mock_data(condition):
  config = _config(condition)
  with tfds.testing.mock_data(num_examples=6):
    data = input_pipeline.create_datasets(config, process_index=1, process_count=2)
    batch = next(data.train)
    val = list(data.eval_batches())
    # pylint: disable-next=g-import-not-at-top,unused-import
    import datasets.knee_drr.knee_drr_dataset_builder
    raw = next(tfds.load(f'knee_drr/{config.data.builder_config}', split='validation',
                         shuffle_files=False).as_numpy_iterator())
  size = config.data.image_size
  assert sorted(batch) == ['cond', 'image']
  for b in [batch] + val:
    for v in b.values():
      assert v.shape == (2, size, size, 1) and v.dtype == np.float32   # 4 // 2 hosts
  assert len(val) == 2
  assert raw['image'].shape[0] == 64 and size == 16
  np.testing.assert_allclose(val[0]['image'][0], _block_mean(raw['image'], size), atol=1e-6)
  np.testing.assert_allclose(val[0]['cond'][0], _block_mean(raw[condition], size), atol=1e-6)
  assert data.num_train_examples == 6


def test_create_datasets_resumes_at_a_step():
  config = _config()
  with tfds.testing.mock_data(num_examples=5):
    full = input_pipeline.create_datasets(config).train
    batches = [next(full)['image'] for _ in range(4)]
    resumed = input_pipeline.create_datasets(config, start_step=3).train
    np.testing.assert_array_equal(next(resumed)['image'], batches[3])


def test_unbuilt_data_set_names_the_build_command(tmp_path):
  config = _config()
  config.data.data_dir = str(tmp_path)
  # The command builds the version the config asks for, not merely the newest.
  spec = rf'{config.data.builder_config}:{re.escape(config.data.version)}'
  with pytest.raises(FileNotFoundError, match=rf'python -m datasets\.knee_drr\.build '
                     rf'{spec} --data_dir {tmp_path}'):
    input_pipeline.create_datasets(config)
  with pytest.raises(FileNotFoundError, match=rf'build {spec} --data_dir {tmp_path}'):
    input_pipeline.load_split(config, 'test')
  config.data.version = '9.9.9'
  with pytest.raises(ValueError, match=r"knee_drr/.*:9\.9\.9: .*cannot be loaded at "
                                       r"version 9\.9\.9.*\(config.data.version='9.9.9'\)"):
    input_pipeline.load_split(config, 'test')


def test_view_stride_keeps_every_nth_view_of_each_patient(data_dir):
  config = ctm.get_config('contour_bone,test')
  config.data.data_dir, config.data.builder_config = data_dir, TINY.name
  config.data.image_size = TINY.detector
  everything = input_pipeline.load_split(config, 'test')
  some = input_pipeline.load_split(config, 'test', view_stride=2)
  # Independent reference: per patient, angles sorted, every 2nd one from the first.
  expected = []
  for pid in sorted(set(everything['patient_id'])):
    angles = sorted(a for p, a in zip(everything['patient_id'], everything['angle_deg'])
                    if p == pid)
    expected += [(pid, a) for a in angles[::2]]
  got = list(zip(some['patient_id'], some['angle_deg']))
  assert sorted(got) == sorted(expected) and len(got) == len(everything['image']) // 2
  for k in ('image', 'contour_bone'):  # each example keeps its own image and masks
    for i, key in enumerate(got):
      j = list(zip(everything['patient_id'], everything['angle_deg'])).index(key)
      np.testing.assert_array_equal(some[k][i], everything[k][j])
  first = input_pipeline.load_split(config, 'test', num_images=2, view_stride=2)
  assert list(first['angle_deg']) == list(some['angle_deg'][:2])
  with pytest.raises(ValueError, match='view_stride=0'):
    input_pipeline.load_split(config, 'test', view_stride=0)


def test_batch_must_split_over_hosts():
  config = _config()
  config.training.batch_size = 5
  with pytest.raises(ValueError, match='batch_size=5'):
    input_pipeline.create_datasets(config, process_index=0, process_count=2)
