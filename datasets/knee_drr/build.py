"""Builds knee_drr/<config> with progress and a resume cache, without apache_beam.

    python -m datasets.knee_drr.build phantom_64 [--data_dir DIR] [--file_format tfrecord]
    python -m datasets.knee_drr.build phantom_64:1.1.0 --convert    # tfrecord -> + ArrayRecord

Data sets are written as ArrayRecord, which `tfds.data_source` and Grain read with random
access and without TensorFlow (the training pipeline needs it). `--convert` adds
ArrayRecord files beside those of a data set built as tfrecord by an earlier version: the
serialized examples are copied as they are, the tfrecord files are kept, and
dataset_info.json is replaced last (written to a temporary file and renamed).
(`python main.py --mode=build --config=...` builds a training config's data.)
"""
import argparse
import json
import os
import struct
import sys
import time
from typing import Iterator

import tensorflow_datasets as tfds

from datasets.knee_drr import knee_drr_dataset_builder  # noqa: F401  (registers knee_drr)

ARRAY_RECORD = tfds.core.FileFormat.ARRAY_RECORD


def build_command(builder_config: str, data_dir: str | None = None) -> str:
  """The shell command that builds knee_drr/<builder_config> (for error messages)."""
  return (f'python -m datasets.knee_drr.build {builder_config}'
          + (f' --data_dir {data_dir}' if data_dir else ''))


def has_array_record(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether a prepared data set has ArrayRecord files (built so, or converted)."""
  info = builder.info
  return info.file_format == ARRAY_RECORD or ARRAY_RECORD in info.alternative_file_formats


def build(builder_config: str, data_dir: str | None = None, file_format: str | None = None,
          manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Builds (or finds already built) knee_drr/<builder_config>; returns the builder.

  file_format: None = ArrayRecord (the builder's default), or 'tfrecord'. A data set
    already built as tfrecord gets ArrayRecord files beside its own (`convert`) unless
    tfrecord is asked for.
  """
  builder = tfds.builder(f'knee_drr/{builder_config}', data_dir=data_dir or None)
  if builder.is_prepared():
    print(f'knee_drr/{builder_config} is already built in {builder.data_dir} '
          f'({builder.info.file_format.value})', file=sys.stderr)
    if file_format != 'tfrecord' and not has_array_record(builder):
      return convert(builder_config, data_dir)  # built as tfrecord by an earlier version
    return builder
  if file_format:  # only for a new build: TFDS refuses another format than one on disk
    builder = tfds.builder(f'knee_drr/{builder_config}', data_dir=data_dir or None,
                           file_format=file_format)
  t0 = time.monotonic()
  config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=config)
  print(f'knee_drr/{builder_config} built in {time.monotonic() - t0:.0f} s: '
        f'{builder.data_dir}', file=sys.stderr)
  return builder


def convert(builder_config: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Adds ArrayRecord shards beside the tfrecord shards of a prepared knee_drr data set.

  Raises:
    FileNotFoundError: the data set is not built.
    ValueError: a tfrecord shard is truncated or holds another number of examples than
      dataset_info.json says.
  """
  # pylint: disable-next=g-import-not-at-top
  from array_record.python import array_record_module
  builder = tfds.builder(f'knee_drr/{builder_config}', data_dir=data_dir or None)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'knee_drr/{builder_config} is not built in {builder.data_dir}: nothing to convert. '
        f'Build it: {build_command(builder_config, data_dir)}')
  if has_array_record(builder):
    print(f'knee_drr/{builder_config} in {builder.data_dir} already has ArrayRecord files',
          file=sys.stderr)
    return builder
  data_path = os.fspath(builder.data_dir)
  for split in builder.info.splits.values():
    for path, expected in zip(split.filepaths, split.shard_lengths):
      path = os.fspath(path)
      target = path.replace('.tfrecord-', '.array_record-')
      records = list(_tfrecords(path))
      if len(records) != expected:
        raise ValueError(f'{path}: {len(records)} examples, but dataset_info.json says '
                         f'{expected}; rebuild the data set.')
      tmp = target + '.incomplete'
      writer = array_record_module.ArrayRecordWriter(tmp, 'group_size:1')  # as TFDS writes
      for r in records:
        writer.write(r)
      writer.close()
      os.replace(tmp, target)
  info_path = os.path.join(data_path, 'dataset_info.json')
  with open(info_path, encoding='utf-8') as f:
    info = json.load(f)
  was = info.get('fileFormat', 'tfrecord')
  info['fileFormat'] = ARRAY_RECORD.value
  info['alternativeFileFormats'] = sorted(set(info.get('alternativeFileFormats', [])) | {was})
  with open(info_path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(info, f, indent=4)
  os.replace(info_path + '.tmp', info_path)
  print(f'knee_drr/{builder_config} in {data_path}: ArrayRecord files added '
        f'({was} files kept)', file=sys.stderr)
  return tfds.builder(f'knee_drr/{builder_config}', data_dir=data_dir or None)


def _tfrecords(path: str) -> Iterator[bytes]:
  """The records of a TFRecord file: [length u64][crc u32][data][crc u32] each (CRCs not
  checked: TFDS wrote them and its shard lengths are checked instead)."""
  with open(path, 'rb') as f:
    while header := f.read(12):
      if len(header) < 12:
        raise ValueError(f'{path}: truncated TFRecord header; rebuild the data set.')
      (length,) = struct.unpack('<Q', header[:8])
      data = f.read(length)
      if len(data) < length or len(f.read(4)) < 4:
        raise ValueError(f'{path}: truncated TFRecord; rebuild the data set.')
      yield data


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('config', help='phantom_64 | phantom_256 | ct_256 [:version]')
  p.add_argument('--data_dir', default=None, help='TFDS data dir (default: TFDS default)')
  p.add_argument('--file_format', default=None, choices=('array_record', 'tfrecord'),
                 help='array_record (default) | tfrecord')
  p.add_argument('--manual_dir', default=None, help='real CTs for ct_256')
  p.add_argument('--convert', action='store_true',
                 help='add ArrayRecord files to a data set built as tfrecord')
  a = p.parse_args(argv)
  if a.convert:
    convert(a.config, a.data_dir)
  else:
    build(a.config, a.data_dir, a.file_format, a.manual_dir)


if __name__ == '__main__':
  from score_sde_knee.utils import progress  # pylint: disable=g-import-not-at-top
  progress.quiet_library_info()  # as main.py: library noise would bury the output
  main()
