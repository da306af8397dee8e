"""Builds knee_drr/<config> with progress and a resume cache, without apache_beam.

    python -m datasets.knee_drr.build phantom_64 [--data_dir DIR] [--file_format array_record]

(`python main.py --mode=build --config=...` does the same for a training config's data.)
"""
import argparse
import sys
import time

import tensorflow_datasets as tfds

from datasets.knee_drr import knee_drr_dataset_builder  # noqa: F401  (registers knee_drr)


def build_command(builder_config: str, data_dir: str | None = None) -> str:
  """The shell command that builds knee_drr/<builder_config> (for error messages)."""
  return (f'python -m datasets.knee_drr.build {builder_config}'
          + (f' --data_dir {data_dir}' if data_dir else ''))


def build(builder_config: str, data_dir: str | None = None, file_format: str | None = None,
          manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Builds (or finds already built) knee_drr/<builder_config>; returns the builder."""
  kwargs = {'data_dir': data_dir or None}
  if file_format:
    kwargs['file_format'] = file_format
  builder = tfds.builder(f'knee_drr/{builder_config}', **kwargs)
  if builder.is_prepared():
    print(f'knee_drr/{builder_config} is already built in {builder.data_dir}', file=sys.stderr)
    return builder
  t0 = time.monotonic()
  config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=config)
  print(f'knee_drr/{builder_config} built in {time.monotonic() - t0:.0f} s: '
        f'{builder.data_dir}', file=sys.stderr)
  return builder


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('config', help='phantom_64 | phantom_256 | ct_256')
  p.add_argument('--data_dir', default=None, help='TFDS data dir (default: TFDS default)')
  p.add_argument('--file_format', default=None, help='tfrecord (default) | array_record')
  p.add_argument('--manual_dir', default=None, help='real CTs for ct_256')
  a = p.parse_args(argv)
  build(a.config, a.data_dir, a.file_format, a.manual_dir)


if __name__ == '__main__':
  from score_sde_knee.utils import progress  # pylint: disable=g-import-not-at-top
  progress.quiet_library_info()  # as main.py: library noise would bury the output
  main()
