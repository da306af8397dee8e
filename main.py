"""score_sde_knee command line: parses flags and dispatches, nothing else.

    python main.py --mode=demo  --workdir=runs/demo                       # all of it, CPU
    python main.py --mode=build --config=configs/ctm.py:cpu               # knee_drr/phantom_64
    python main.py --mode=train --config=configs/ctm.py:contour_bone,cpu --workdir=runs/ctm
    python main.py --mode=eval  --workdir=runs/ctm                        # saved config
    python main.py --mode=eval  --workdir=runs/ctm --step=1500            # an older checkpoint
    python main.py --mode=eval  --workdir=runs/ctm --sampler=fast         # 49 evaluations
    python main.py --mode=sample --workdir=runs/ctm --masks=masks/ --out=synthetic/
    python main.py --mode=sample --workdir=runs/ctm --views=all --masks=test --out=legs/
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from configs import default

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file[:condition,scale].',
                                lock_config=True)
flags.DEFINE_enum('mode', 'train', ['build', 'train', 'eval', 'sample', 'demo'], 'What to run.')
flags.DEFINE_string('workdir', None, 'Run directory: config, checkpoints, logs, eval.')
flags.DEFINE_string('data_dir', None, 'TFDS data dir (overrides config.data.data_dir).')
flags.DEFINE_string('masks', None, 'sample: a mask file (PNG/NPY), a folder, or "test".')
flags.DEFINE_string('out', None, 'sample: output folder.')
flags.DEFINE_integer('num_samples', 1, 'sample: samples per mask.')
flags.DEFINE_enum('views', None, ['all'], "sample: 'all' samples every view of a leg "
                  'jointly as projections of one volume, with --masks=test, '
                  'test:<patient> or a label volume (score_sde_knee/multiview_run.py).')
flags.DEFINE_integer('seed', 0, 'sample: first seed.')
flags.DEFINE_bool('resize', False, 'sample: resize masks of another size (nearest neighbour).')
flags.DEFINE_bool('snap', False, 'sample: round mask values to the nearest label the model '
                  'takes ({0, 0.5} for a contour model, else {0, 0.5, 1}).')
flags.DEFINE_string('export_tfds', None, 'sample: also store the outputs as the TFDS data '
                    'set knee_drr_synthetic in this data dir (contour_bone masks only).')
flags.DEFINE_enum('condition', None, list(default.CONDITIONS),
                  'eval/sample: the condition (default: the training one; csm: either).')
flags.DEFINE_integer('step', None, 'eval: evaluate this checkpoint step instead of the '
                     'newest (results in workdir/eval/step_<step>/).')
flags.DEFINE_string('sampler', None, "eval/sample: a preset, 'paper' (PC N = 500), 'fast' "
                    "(49 network evaluations) or 'fast-air' (fast, the air outside the mask "
                    "held but for a 1-2 px ring per condition), or a setting "
                    'solver:n[:name=value,...] such as pc:100, instead of the run\'s sampler; '
                    'eval results go to workdir/eval_samplers/.')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of user errors.')
flags.DEFINE_bool('library_logs', False, "Show the INFO lines of orbax, TFDS and jax's "
                  "backend search, and TFDS's warning about its own use of .dtype "
                  '(hidden by default: they bury the progress lines).')


def _config():
  from score_sde_knee import run_config
  return run_config.resolve(FLAGS.config, FLAGS.workdir, FLAGS.mode, FLAGS.data_dir)


def _run(_):
  if FLAGS.step is not None and FLAGS.mode != 'eval':
    raise ValueError(f'--step applies to --mode=eval only, not --mode={FLAGS.mode}.')
  if FLAGS.views is not None and FLAGS.mode != 'sample':
    raise ValueError(f'--views applies to --mode=sample only, not --mode={FLAGS.mode}.')
  if FLAGS.sampler is not None and FLAGS.mode not in ('eval', 'sample'):
    raise ValueError(f'--sampler applies to --mode=eval and --mode=sample only, not '
                     f'--mode={FLAGS.mode}.')
  from score_sde_knee.utils import progress
  if not FLAGS.library_logs:
    progress.quiet_library_info()
  from score_sde_knee import parallel
  parallel.maybe_initialize_distributed()  # multi-host: before any other JAX call
  if FLAGS.mode == 'demo':
    from score_sde_knee import demo
    demo.run_demo(FLAGS.workdir or 'runs/demo', FLAGS.data_dir)
    return
  config = _config()
  if FLAGS.condition:
    config.eval.condition = FLAGS.condition
  if FLAGS.mode == 'build':
    from datasets.knee_drr import build
    from score_sde_knee import run_config
    build.build(run_config.data_spec(config), config.data.data_dir or None)
  elif FLAGS.mode == 'train':
    from score_sde_knee import train
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == 'eval':
    from score_sde_knee import evaluate
    evaluate.evaluate(config, FLAGS.workdir, step=FLAGS.step, sampler=FLAGS.sampler)
  elif FLAGS.mode == 'sample' and FLAGS.views == 'all':
    from score_sde_knee import multiview_run
    multiview_run.run(config, FLAGS.workdir, masks=FLAGS.masks, out=FLAGS.out,
                      num_samples=FLAGS.num_samples, seed=FLAGS.seed, sampler=FLAGS.sampler,
                      snap=FLAGS.snap, resize=FLAGS.resize, tfds_dir=FLAGS.export_tfds)
  elif FLAGS.mode == 'sample':
    from score_sde_knee import generate
    generate.generate(config, FLAGS.workdir, masks=FLAGS.masks, out=FLAGS.out,
                      num_samples=FLAGS.num_samples, seed=FLAGS.seed, snap=FLAGS.snap,
                      resize=FLAGS.resize, tfds_dir=FLAGS.export_tfds,
                      sampler=FLAGS.sampler)


def _fail(message: str) -> None:
  """Prints a user error as one line and exits with status 2."""
  print(f'error: {" ".join(message.split())}\n(rerun with --traceback for the full '
        'traceback)', file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with bad flags and config overrides as one `error:` line."""
  try:
    return FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    if '--traceback' in argv:
      raise
    _fail(_flag_error(e, argv))
  return argv


def _flag_error(e: Exception, argv: list[str]) -> str:
  text = str(e)
  if isinstance(e, (AttributeError, KeyError)):
    # ml_collections: an override of a field the config does not have.
    key = text.strip('"\' ')
    names = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    bad = [n for n in names if key in n.split('.')] or names
    return (f'unknown config field {bad[0] if bad else key}: the config has no field '
            f'{key!r} (the fields are in configs/default.py).')
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if len(lines) > 1 and any(line.startswith('Traceback') for line in lines):
    # A config file's get_config raised: keep the flag and the exception's last line.
    return f'{lines[0].rstrip(":")}: {lines[-1]}'
  return text


def main(argv):
  try:
    _run(argv)
  except (ValueError, FileNotFoundError, PermissionError, OSError) as e:
    if FLAGS.traceback:
      raise
    _fail(str(e))


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from score_sde_knee.utils import xla_cpu
  xla_cpu.configure()  # before JAX starts: faster convolutions on a CPU
  app.run(main, flags_parser=parse_flags)
