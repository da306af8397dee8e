"""Input pipeline: epochs are permutations, the stream resumes at any step, hosts get
disjoint shards, the knee_drr path yields per-host {'image', 'cond'} batches resized by area
averaging, a tfrecord build is refused with the command that converts it, and load_split
keeps every n-th view of each patient."""
import os
import re
import shutil

import grain
import numpy as np
import pytest

from configs import ctm
from datasets.knee_drr import build
from datasets.knee_drr import knee_drr_dataset_builder as kb
from score_sde_knee import input_pipeline
from helpers import TINY


def _stream(n, per_host, start_step, seed=3, process_index=0, num_batches=12):
  ds = input_pipeline.train_dataset(grain.MapDataset.range(n), per_host=per_host, seed=seed,
                                    process_index=process_index)
  it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2)))
  input_pipeline.position(it, start_step)
  return np.stack([next(it) for _ in range(num_batches)])


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


def test_host_shards_are_disjoint_equal_and_contiguous():
  source = list(range(11))
  shards = [list(input_pipeline.host_shard(source, i, 3)) for i in range(3)]
  assert shards == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]   # 11 // 3 each, the rest dropped


def test_empty_shard_is_an_error():
  with pytest.raises(ValueError, match='empty'):
    input_pipeline.train_dataset(grain.MapDataset.range(0), per_host=1, seed=0)


def _config(data_dir, condition='contour'):
  c = ctm.get_config(f'{condition},test')
  c.data.data_dir, c.data.builder_config = data_dir, TINY.name
  c.data.image_size = TINY.detector // 2               # 16 -> 8: the area resize runs
  c.training.batch_size = 4
  c.training.eval_batches = 2
  return c


def _block_mean(x, size):
  """Area resize by an integer factor: mean over (f x f) blocks, float64."""
  h = x.shape[0]
  f = h // size
  return x.astype(np.float64).reshape(size, f, size, f, -1).mean(axis=(1, 3))


@pytest.mark.parametrize('condition', ['contour', 'contour_bone'])
def test_create_datasets_on_knee_drr(data_dir, condition):
  config = _config(data_dir, condition)
  data = input_pipeline.create_datasets(config, process_index=1, process_count=2)
  batch = next(data.train)
  val = list(data.eval_batches())
  size = config.data.image_size
  assert sorted(batch) == ['cond', 'image']
  for b in [batch] + val:
    for v in b.values():
      assert v.shape == (2, size, size, 1) and v.dtype == np.float32   # 4 // 2 hosts
  assert len(val) == 2
  for a, b in zip(val, data.eval_batches()):           # the same batches every call
    np.testing.assert_array_equal(a['image'], b['image'])
  # Independent reference: host 1 of 2 holds the second half of the split in file order.
  raw = tfds_source(data_dir, 'validation')
  first = len(raw) // 2
  np.testing.assert_allclose(val[0]['image'][0], _block_mean(raw[first]['image'], size),
                             atol=1e-6)
  np.testing.assert_allclose(val[0]['cond'][0], _block_mean(raw[first][condition], size),
                             atol=1e-6)
  assert data.num_train_examples == len(tfds_source(data_dir, 'train')) // 2


def tfds_source(data_dir, split):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder(f'knee_drr/{TINY.name}', data_dir=data_dir).as_data_source(split)


def test_create_datasets_resumes_at_a_step(data_dir):
  config = _config(data_dir)
  full = input_pipeline.create_datasets(config).train
  batches = [next(full)['image'] for _ in range(5)]   # 6 examples, batch 4: epochs straddle
  resumed = input_pipeline.create_datasets(config, start_step=3).train
  np.testing.assert_array_equal(next(resumed)['image'], batches[3])
  np.testing.assert_array_equal(next(resumed)['image'], batches[4])


def test_unbuilt_data_set_names_the_build_command(tmp_path):
  config = _config(str(tmp_path))
  config.data.builder_config = 'phantom_64'
  # The command builds the version the config asks for, not merely the newest.
  spec = rf'phantom_64:{re.escape(config.data.version)}'
  with pytest.raises(FileNotFoundError, match=rf'python -m datasets\.knee_drr\.build '
                     rf'{spec} --data_dir {tmp_path}'):
    input_pipeline.create_datasets(config)
  with pytest.raises(FileNotFoundError, match=rf'build {spec} --data_dir {tmp_path}'):
    input_pipeline.load_split(config, 'test')
  config.data.version = '9.9.9'
  with pytest.raises(ValueError, match=r"knee_drr/.*:9\.9\.9: .*cannot be loaded at "
                                       r"version 9\.9\.9.*\(config.data.version='9.9.9'\)"):
    input_pipeline.load_split(config, 'test')


def test_a_tfrecord_build_is_refused_with_the_convert_command_then_converted(tmp_path,
                                                                            data_dir):
  old = str(tmp_path / 'old')
  kb.Builder(config=TINY, data_dir=old, file_format='tfrecord').download_and_prepare()
  config = _config(old)
  with pytest.raises(FileNotFoundError,
                     match=rf'built as tfrecord.*build {TINY.name}:.* --data_dir {old} '
                           r'--convert'):
    input_pipeline.create_datasets(config)
  version_dir = os.path.join(old, 'knee_drr', TINY.name, config.data.version)
  before = {f: os.path.getsize(os.path.join(version_dir, f)) for f in os.listdir(version_dir)
            if '.tfrecord-' in f}
  build.build(f'{TINY.name}:{config.data.version}', old)   # an old build is converted
  after = os.listdir(version_dir)
  assert all(os.path.getsize(os.path.join(version_dir, f)) == n for f, n in before.items())
  assert {f.replace('.tfrecord-', '.array_record-') for f in before} <= set(after)
  # Same examples as a data set built as ArrayRecord in the first place.
  converted = input_pipeline.load_split(config, 'test')
  reference = input_pipeline.load_split(_config(data_dir), 'test')
  for k in ('image', 'contour_bone', 'patient_id', 'angle_deg'):
    np.testing.assert_array_equal(converted[k], reference[k])
  batch = next(input_pipeline.create_datasets(config).train)
  assert batch['image'].shape == (4, 8, 8, 1)
  shutil.rmtree(old)


def test_a_truncated_tfrecord_is_named(tmp_path):
  old = str(tmp_path)
  b = kb.Builder(config=TINY, data_dir=old, file_format='tfrecord')
  b.download_and_prepare()
  path = os.fspath(b.info.splits['train'].filepaths[0])
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) - 7)
  with pytest.raises(ValueError, match=re.escape(path) + '.*truncated'):
    build.convert(TINY.name, old)
  assert not any('.array_record-' in f for f in os.listdir(os.path.dirname(path)))


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


def test_batch_must_split_over_hosts(data_dir):
  config = _config(data_dir)
  config.training.batch_size = 5
  with pytest.raises(ValueError, match='batch_size=5'):
    input_pipeline.create_datasets(config, process_index=0, process_count=2)
