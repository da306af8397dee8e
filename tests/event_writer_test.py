"""The TensorFlow-free TensorBoard writer, read back with TensorBoard's own event loader."""
import glob
import io
import logging
import os

import numpy as np
from PIL import Image
import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from score_sde_knee.utils import event_writer


def _events(workdir):
  """All events of the one event file in workdir (the file-version header dropped)."""
  paths = glob.glob(os.path.join(str(workdir), 'events.out.tfevents.*'))
  assert len(paths) == 1, os.listdir(workdir)
  return [e for e in event_file_loader.EventFileLoader(paths[0]).Load()
          if e.HasField('summary')]


def _values(events):
  """{tag: [(step, value proto, plugin name)]} over all events, in file order."""
  out = {}
  for e in events:
    for v in e.summary.value:
      out.setdefault(v.tag, []).append((e.step, v, v.metadata.plugin_data.plugin_name))
  return out


def test_scalars_images_and_hparams_read_back_exactly(tmp_path):
  rng = np.random.default_rng(0)
  gray = rng.uniform(-0.1, 1.1, size=(2, 5, 7, 1)).astype(np.float32)  # clipped on write
  rgb = rng.integers(0, 256, size=(6, 4, 3), dtype=np.uint8)             # one image, 3-D
  w = event_writer.EventWriter(str(tmp_path))
  w.write_hparams({'lr': 2e-4, 'model.nf': 32, 'method': 'ctm', 'ema': True})
  w.write_scalars(1, {'loss': 0.1, 'grad_norm': np.float64(3.3)})
  w.write_scalars(2, {'loss': np.array(0.05, np.float32), 'steps_per_sec': 7})
  w.write_scalars(5, {'eval_loss': 1e-7})
  w.write_images(5, {'gray': gray, 'rgb': rgb})
  w.close()

  got = _values(_events(tmp_path))
  hparams_tag = hparams_metadata.SESSION_START_INFO_TAG
  assert sorted(got) == sorted([hparams_tag, 'eval_loss', 'grad_norm', 'gray', 'loss', 'rgb',
                                'steps_per_sec'])

  def scalars(tag):
    assert {p for _, _, p in got[tag]} == {'scalars'}
    return [(s, tensor_util.make_ndarray(v.tensor)) for s, v, _ in got[tag]]
  loss = scalars('loss')
  assert [s for s, _ in loss] == [1, 2]
  assert all(x.dtype == np.float32 and x.shape == () for _, x in loss)
  # Exactly the float32 of what was written (0.1 is not a float32: the cast is the point).
  assert [x.item() for _, x in loss] == [np.float32(0.1).item(), np.float32(0.05).item()]
  assert scalars('grad_norm') == [(1, np.float32(3.3))]
  assert scalars('steps_per_sec') == [(2, np.float32(7.0))]
  assert scalars('eval_loss') == [(5, np.float32(1e-7))]

  # Images: [width, height, png_0, ...] as tf.summary.image writes; float -> uint8 is
  # clip(floor(x * 255.5), 0, 255), spelled out here independently of the module.
  for tag, want in [('gray', _tf_uint8(gray)), ('rgb', rgb[None])]:
    [(step, v, plugin)] = got[tag]
    assert (step, plugin) == (5, 'images')
    blobs = tensor_util.make_ndarray(v.tensor).tolist()
    n, h, wd, c = want.shape
    assert blobs[:2] == [str(wd).encode(), str(h).encode()] and len(blobs) == 2 + n
    for png, image in zip(blobs[2:], want):
      decoded = Image.open(io.BytesIO(png))
      assert decoded.format == 'PNG' and decoded.mode == ('L' if c == 1 else 'RGB')
      np.testing.assert_array_equal(np.asarray(decoded).reshape(image.shape), image)

  # Hparams: the hparams plugin's start-info record at step 0, as clu writes it.
  [(step, v, plugin)] = got[hparams_tag]
  assert (step, plugin) == (0, 'hparams')
  info = plugin_data_pb2.HParamsPluginData.FromString(
      v.metadata.plugin_data.content).session_start_info
  assert info.hparams['lr'].number_value == 2e-4
  assert info.hparams['model.nf'].number_value == 32
  assert info.hparams['method'].string_value == 'ctm'
  assert info.hparams['ema'].bool_value is True


def _tf_uint8(x):
  """TensorFlow's convert_image_dtype(float -> uint8, saturate=True), element by element."""
  return np.array([min(max(int(np.floor(float(v) * 255.5)), 0), 255) for v in x.ravel()],
                  np.uint8).reshape(x.shape)


def test_float_to_uint8_follows_tensorflow():
  x = np.array([-0.2, 0.0, 0.002, 0.004, 0.5, 0.999, 1.0, 1.3, np.nan], np.float32)
  got = event_writer._to_uint8('x', x.reshape(1, 1, -1, 1)).ravel()
  np.testing.assert_array_equal(got, [0, 0, 0, 1, 127, 255, 255, 255, 0])
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  finite = x[:-1].reshape(1, 1, -1, 1)
  np.testing.assert_array_equal(event_writer._to_uint8('x', finite),
                                tf.image.convert_image_dtype(finite, tf.uint8,
                                                             saturate=True).numpy())


def test_bad_inputs_name_the_tag_and_shape(tmp_path):
  w = event_writer.EventWriter(None)
  with pytest.raises(ValueError, match=r"'loss' is float64 of shape \(2,\)"):
    w.write_scalars(1, {'loss': np.zeros(2)})
  with pytest.raises(ValueError, match=r"'samples' has shape \(4, 4\)"):
    w.write_images(1, {'samples': np.zeros((4, 4))})
  with pytest.raises(ValueError, match=r"'samples' has shape \(1, 4, 4, 2\)"):
    w.write_images(1, {'samples': np.zeros((1, 4, 4, 2))})
  with pytest.raises(ValueError, match="'samples' is int32"):
    w.write_images(1, {'samples': np.zeros((1, 4, 4, 1), np.int32)})
  assert os.listdir(tmp_path) == []


def test_create_writer_without_tensorflow(tmp_path, monkeypatch, caplog):
  asked, real = [], event_writer.importlib.util.find_spec

  def find_spec(name, *args):
    asked.append(name)
    return None if name == 'tensorflow' else real(name, *args)
  monkeypatch.setattr(event_writer.importlib.util, 'find_spec', find_spec)
  caplog.set_level(logging.INFO, logger='absl')

  # Processes other than 0: the log only, no event file.
  quiet = event_writer.create_writer(str(tmp_path / 'other'), just_logging=True)
  assert isinstance(quiet, event_writer.EventWriter)
  quiet.write_hparams({'lr': 0.1})
  quiet.write_scalars(3, {'b': 2, 'a': np.float32(1.5)})
  quiet.write_images(3, {'samples': np.zeros((1, 2, 2, 1), np.float32)})
  quiet.flush()
  quiet.close()
  assert not (tmp_path / 'other').exists()
  assert [r.getMessage() for r in caplog.records] == [
      "[Hyperparameters] {'lr': 0.1}", '[3] a=1.5, b=2',
      "[3] Got images: {'samples': (1, 2, 2, 1)}."]

  # Process 0: one event file directly in the workdir.
  main = event_writer.create_writer(str(tmp_path / 'main'), just_logging=False)
  assert isinstance(main, event_writer.EventWriter)
  main.write_scalars(1, {'loss': 0.5})
  main.flush()  # on disk before close
  assert [(e.step, e.summary.value[0].tag) for e in _events(tmp_path / 'main')] == [
      (1, 'loss')]
  main.close()
  assert asked.count('tensorflow') == 2


def test_create_writer_with_tensorflow_is_clus(tmp_path):
  pytest.importorskip('tensorflow')
  w = event_writer.create_writer(str(tmp_path), just_logging=False)
  assert not isinstance(w, event_writer.EventWriter)
  assert type(w).__module__.startswith('clu.metric_writers')
  w.close()


def test_the_same_records_as_clus_tensorflow_writer(tmp_path):
  pytest.importorskip('tensorflow')
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(1).uniform(-0.05, 1.05, (2, 6, 9, 1)).astype(np.float32)
  read = {}
  for name, make in [('clu', metric_writers.SummaryWriter), ('ours', event_writer.EventWriter)]:
    w = make(str(tmp_path / name))
    w.write_hparams({'lr': 1e-3, 'method': 'ctm', 'nf': 3, 'ema': True})
    w.write_scalars(2, {'loss': 0.1})
    w.write_images(2, {'samples': image})
    w.close()
    read[name] = {t: [(s, p, tensor_util.make_ndarray(v.tensor), v.metadata.plugin_data.content)
                      for s, v, p in vs] for t, vs in _values(_events(tmp_path / name)).items()}
  clu, ours = read['clu'], read['ours']
  assert sorted(clu) == sorted(ours)
  [(s, p, x, _)], [(s2, p2, y, _)] = clu['loss'], ours['loss']
  assert (s, p, x.dtype, x.item()) == (s2, p2, y.dtype, y.item())
  [(s, p, x, _)], [(s2, p2, y, _)] = clu['samples'], ours['samples']
  assert (s, p, list(x[:2])) == (s2, p2, list(y[:2]))
  for a, b in zip(x[2:], y[2:], strict=True):  # PNG bytes may differ, pixels must not
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(a))),
                                  np.asarray(Image.open(io.BytesIO(b))))
  tag = hparams_metadata.SESSION_START_INFO_TAG
  a, b = (plugin_data_pb2.HParamsPluginData.FromString(r[tag][0][3]) for r in (clu, ours))
  for info in (a, b):
    info.session_start_info.start_time_secs = 0  # the only field that may differ
  assert a == b
