"""Progress lines with rate and ETA for long jobs (data build, sampling, evaluation)."""
import functools
import logging
import os
import sys
import time

# Libraries whose INFO lines (orbax: ~40 per checkpoint save; TFDS: one per shard written)
# would bury the progress lines of a run. Their warnings and errors still show.
CHATTY_LIBRARIES = ('orbax', 'tensorflow_datasets')
# jax's logger for backend discovery; its INFO lines list the backends that failed to load.
JAX_BACKEND_LOGGER = 'jax._src.xla_bridge'


def format_seconds(s: float) -> str:
  s = max(0, int(round(s)))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f'{h}h{m:02d}m{sec:02d}s' if h else (f'{m}m{sec:02d}s' if m else f'{sec}s')


class Progress:
  """Prints `desc: done/total (pct) rate, elapsed, ETA` to stderr at most every `every` s.

  `done` may start above zero (resumed work): the rate counts only work done in this run,
  so the ETA stays honest after a resume.
  """

  def __init__(self, total: int, desc: str, *, done: int = 0, unit: str = 'it',
               every: float = 5.0, stream=None, quiet: bool = False):
    # quiet: count but print nothing (the processes other than the first of a multi-host
    # run, so that one line stands for the whole job).
    self.total, self.desc, self.unit, self.every = total, desc, unit, every
    self.quiet = quiet
    self.done = self._start_done = done
    self._stream = stream or sys.stderr
    self._t0 = self._last = time.monotonic()

  def update(self, n: int = 1, force: bool = False) -> None:
    self.done += n
    now = time.monotonic()
    if self.quiet:
      return
    if force or self.done >= self.total or now - self._last >= self.every:
      self._last = now
      print(self.line(now), file=self._stream, flush=True)

  def line(self, now: float | None = None) -> str:
    now = time.monotonic() if now is None else now
    elapsed = now - self._t0
    new = self.done - self._start_done
    pct = 100.0 * self.done / max(self.total, 1)
    if new > 0 and elapsed > 0:
      rate = new / elapsed
      eta = (self.total - self.done) / rate
      speed = f'{rate:.2f} {self.unit}/s' if rate >= 1 else f'{1 / rate:.2f} s/{self.unit}'
      tail = f'{speed}, elapsed {format_seconds(elapsed)}, ETA {format_seconds(eta)}'
    else:
      tail = f'elapsed {format_seconds(elapsed)}'
    return f'{self.desc}: {self.done}/{self.total} ({pct:.0f}%) {tail}'


class _DropLibraryInfo(logging.Filter):

  def __init__(self, libraries: tuple[str, ...]):
    super().__init__()
    self._parts = tuple(f'{os.sep}{name}{os.sep}' for name in libraries)

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(
        p in record.pathname for p in self._parts)


class _DropTfdsOwnDtypeWarning(logging.Filter):
  """Drops TFDS's "`FeatureConnector.dtype` is deprecated" when TFDS itself read `.dtype`.

  TFDS 4.9's Tensor.decode_example reads its own deprecated `.dtype` for every
  ZLIB-encoded tensor (knee_drr's image and masks), so each read of the data set printed
  three warnings telling the user to change code they do not own. A `.dtype` read from
  outside TFDS still warns.
  """

  _PART = f'{os.sep}tensorflow_datasets{os.sep}'

  def filter(self, record: logging.LogRecord) -> bool:
    if '.dtype` is deprecated' not in str(record.msg):
      return True
    frame = sys._getframe(1)  # pylint: disable=protected-access
    while frame is not None:  # find the `dtype` property, then who read it
      code = frame.f_code
      if code.co_name == 'dtype' and self._PART in code.co_filename:
        caller = frame.f_back  # past functools: `dtype` is a cached_property
        while caller is not None and caller.f_code.co_filename == functools.__file__:
          caller = caller.f_back
        return caller is None or self._PART not in caller.f_code.co_filename
      frame = frame.f_back
    return True


def quiet_library_info(libraries: tuple[str, ...] = CHATTY_LIBRARIES) -> None:
  """Drops INFO/DEBUG records logged through absl from inside `libraries`' packages,
  TFDS's warnings about its own use of a deprecated field, and jax's INFO line about each
  accelerator backend it probed and did not find ('Unable to initialize backend tpu').

  Idempotent. This project's own absl INFO lines (restored step, eval results, training
  scalars) are kept, and so is every library warning about the user's own code or setup.
  """
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  logger = absl_logging.get_absl_logger()
  if not any(isinstance(f, _DropLibraryInfo) for f in logger.filters):
    logger.addFilter(_DropLibraryInfo(libraries))
  if not any(isinstance(f, _DropTfdsOwnDtypeWarning) for f in logger.filters):
    logger.addFilter(_DropTfdsOwnDtypeWarning())
  # jax logs through its own logger, not absl's: a filter on absl's does not see it.
  logging.getLogger(JAX_BACKEND_LOGGER).setLevel(logging.WARNING)
