"""TensorBoard metrics without TensorFlow: `create_writer(workdir, just_logging=...)`.

clu's `metric_writers` package imports its TensorFlow summary writer on import, so it cannot
be used where TensorFlow is not installed. `EventWriter` writes the same event files
(`workdir/events.out.tfevents.*`) with the `tensorboard` package's pure-Python
`EventFileWriter` and protos, in the format TensorFlow 2's summary ops write:

  scalars  a float32 scalar tensor, plugin 'scalars' (as `tf.summary.scalar`)
  images   a string tensor [width, height, png_0, png_1, ...], plugin 'images' (as
           `tf.summary.image`, all N images of a batch)
  hparams  the hparams plugin's start-info record at step 0 (`hparams_pb`, what clu's
           `write_hparams` writes through `hparams.api.hparams`): the HPARAMS tab shows it

Every write is also logged with absl, one line each, like clu's LoggingWriter.
"""
import importlib.util
import io
import os
import time
from typing import Any, Mapping

from absl import logging
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer import event_file_writer
from tensorboard.util import tensor_util


def create_writer(workdir: str, *, just_logging: bool):
  """The metric writer for a training run in `workdir`.

  Args:
    workdir: the directory that gets the event files (created if missing).
    just_logging: log only, write no event file (processes other than 0 of a multi-host
      run, which share the workdir with process 0).
  Returns:
    clu's default writer (TensorBoard + log) when TensorFlow is installed, else an
    `EventWriter`. Both have write_scalars / write_images / write_hparams / flush / close.
  """
  if importlib.util.find_spec('tensorflow') is not None:
    # Only here: importing clu's writers imports TensorFlow.
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    return metric_writers.create_default_writer(workdir, just_logging=just_logging)
  return EventWriter(None if just_logging else os.fspath(workdir))


class EventWriter:
  """The subset of clu's MetricWriter used by training, needing no TensorFlow.

  Writes are queued by `EventFileWriter`'s background thread; `flush()` returns once they
  are on disk.
  """

  def __init__(self, logdir: str | None):
    """logdir: where the event file goes; None: log only, no file."""
    self._events = None if logdir is None else event_file_writer.EventFileWriter(logdir)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """scalars: {tag: a number or 0-d array}, stored as float32."""
    values = {k: _scalar(k, v) for k, v in scalars.items()}
    logging.info('[%d] %s', step,
                 ', '.join(f'{k}={v:.6g}' for k, v in sorted(values.items())))
    if self._events is None:
      return
    summary = summary_pb2.Summary()
    for tag, value in values.items():
      summary.value.add(
          tag=tag, tensor=tensor_util.make_tensor_proto(value),
          metadata=summary_pb2.SummaryMetadata(
              plugin_data=summary_pb2.SummaryMetadata.PluginData(
                  plugin_name=scalar_metadata.PLUGIN_NAME),
              data_class=summary_pb2.DataClass.DATA_CLASS_SCALAR))
    self._write(step, summary)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: {tag: (N, H, W, C) or (H, W, C)}, C 1, 3 or 4; uint8, or float in [0, 1].

    Floats become uint8 as TensorFlow's `convert_image_dtype(saturate=True)` does for
    `tf.summary.image`: clip(floor(x * 255.5), 0, 255).
    """
    batches = {k: _to_uint8(k, v) for k, v in images.items()}
    logging.info('[%d] Got images: %s.', step, {k: v.shape for k, v in batches.items()})
    if self._events is None:
      return
    summary = summary_pb2.Summary()
    for tag, batch in batches.items():
      _, h, w, _ = batch.shape
      blobs = np.array([str(w).encode(), str(h).encode()] + [_png(im) for im in batch],
                       dtype=object)
      meta = image_metadata.create_summary_metadata(display_name=None, description=None)
      meta.data_class = summary_pb2.DataClass.DATA_CLASS_BLOB_SEQUENCE
      summary.value.add(tag=tag, tensor=tensor_util.make_tensor_proto(blobs),
                        metadata=meta)
    self._write(step, summary)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """hparams: {name: bool, int, float or str} (numpy scalars are converted)."""
    logging.info('[Hyperparameters] %s', dict(hparams))
    if self._events is None:
      return
    self._write(0, hparams_summary.hparams_pb(dict(hparams)))

  def flush(self) -> None:
    logging.flush()
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    """Flushes and closes the event file; the writer must not be used afterwards."""
    logging.flush()
    if self._events is not None:
      self._events.close()
      self._events = None

  def _write(self, step: int, summary) -> None:
    self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary))


def _scalar(tag: str, value: Any) -> np.float32:
  a = np.asarray(value)
  if a.ndim != 0 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
    raise ValueError(f'write_scalars: {tag!r} is {a.dtype} of shape {a.shape}; expected '
                     'one number (a 0-d array or a Python scalar).')
  return np.float32(a)


def _to_uint8(tag: str, images: np.ndarray) -> np.ndarray:
  """(N, H, W, C) uint8 from uint8 or [0, 1] floats of shape (N, H, W, C) or (H, W, C)."""
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or 0 in x.shape:
    raise ValueError(f'write_images: {tag!r} has shape {np.shape(images)}; expected '
                     '(N, H, W, C) or (H, W, C) with C 1, 3 or 4 and no empty axis.')
  if x.dtype == np.uint8:
    return x
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f'write_images: {tag!r} is {x.dtype}; expected uint8 or floats '
                     'in [0, 1].')
  # 255.5 and truncation: TensorFlow's float -> uint8 rule, so both writers agree. NaN -> 0
  # rather than an undefined cast.
  scaled = np.nan_to_num(np.floor(x.astype(np.float64) * 255.5), nan=0.0)
  return np.clip(scaled, 0, 255).astype(np.uint8)


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format='PNG')
  return buf.getvalue()
