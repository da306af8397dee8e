"""Orbax checkpoints of the train state, and the run's saved config.

Two managers in the workdir:
  checkpoints/   kept checkpoints every config.training.checkpoint_every steps (and at
                 the last step), the newest config.training.keep_checkpoints kept;
  preemption/    one checkpoint, replaced every config.training.preemption_every steps:
                 a crash loses at most that many steps.
A run resumes from whichever of the two holds the newest step. Only checkpoints whose
step had a finite loss are written, so the newest is always a good one.

Each checkpoint holds two items: `default`, the train state (the only item of checkpoints
written before the data state was saved, which still restore), and `data`, the state of
the Grain iterator that fed it (one JSON file per process), so that a resumed run reads on
exactly where the interrupted one stopped.
"""
import json
import os
from typing import Any

from absl import logging
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from score_sde_knee import methods
from score_sde_knee import run_config

CONFIG_FILE = run_config.CONFIG_FILE
KEPT_DIR = 'checkpoints'
PREEMPTION_DIR = 'preemption'
# What must match between a workdir's saved config and the config resuming it (the
# checkpoints' meaning and shapes); anything else (e.g. num_train_steps) may change.
_MUST_MATCH = ('method', 'condition', 'model', 'data.image_size')
# The items of a checkpoint: 'default' is the name orbax gave the state when it was the
# only item, so checkpoints written then restore unchanged.
_STATE, _DATA = 'default', 'data'


class Checkpoints:
  """The kept and preemption managers of one workdir."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    t = config.training
    self.workdir = workdir
    # Declared handlers let item_metadata() read the stored shapes before a restore.
    def manager(sub, keep):
      return ocp.CheckpointManager(
          os.path.join(os.path.abspath(workdir), sub),
          item_handlers={_STATE: ocp.StandardCheckpointHandler(),
                         _DATA: grain.checkpoint.CheckpointHandler()},
          options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self.kept = manager(KEPT_DIR, t.keep_checkpoints)
    self.preemption = manager(PREEMPTION_DIR, 1)
    self.checkpoint_every = t.checkpoint_every
    self.preemption_every = t.preemption_every
    self.num_train_steps = t.num_train_steps

  def latest_step(self) -> int | None:
    steps = [s for s in (self.kept.latest_step(), self.preemption.latest_step())
             if s is not None]
    return max(steps) if steps else None

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, int] | None:
    """(state, step) of checkpoint `step` (default: the newest), or None when there is none.

    target: a state (arrays or ShapeDtypeStructs) whose structure, shapes, dtypes and
    shardings the restored state takes.

    Raises:
      ValueError: no checkpoint of that step (the message lists the ones there are).
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        return None
    kept, preempted = self.kept.all_steps(), self.preemption.all_steps()
    if step not in kept and step not in preempted:
      raise ValueError(
          f'No checkpoint of step {step} in {self.workdir}; '
          f'it has steps {sorted(set(kept) | set(preempted)) or "none"}.')
    abstract_state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    manager = self.kept if step in kept else self.preemption
    where = os.path.join(os.fspath(manager.directory), str(step))
    _check_shapes(manager.item_metadata(step)[_STATE], abstract_state, where)
    try:
      state = manager.restore(step, args=ocp.args.Composite(
          **{_STATE: ocp.args.StandardRestore(abstract_state)}))[_STATE]
    except ValueError as e:  # structure or dtype: orbax's message, with the checkpoint named
      raise ValueError(f'The checkpoint {where} does not fit this config\'s train state '
                       f'({e}). Was its config.json edited? Use another --workdir.') from None
    logging.info('Restored step %d from %s.', step, manager.directory)
    return state, step

  def restore_data(self, step: int, iterator: Any) -> bool:
    """Sets `iterator` (a Grain iterator) to the data state saved with checkpoint `step`.

    Returns False, leaving the iterator as it is, when that checkpoint holds no data
    state (written before it was saved, or by a run fed from another iterator).
    """
    manager = self.kept if step in self.kept.all_steps() else self.preemption
    if not os.path.isdir(os.path.join(os.fspath(manager.directory), str(step), _DATA)):
      return False
    manager.restore(step, args=ocp.args.Composite(
        **{_DATA: grain.checkpoint.CheckpointRestore(iterator)}))
    logging.info('Restored the data iterator of step %d: %s.', step, iterator.get_state())
    return True

  def due(self, step: int) -> bool:
    """Whether `maybe_save(step, ...)` writes a checkpoint."""
    return self._kept_due(step) or (self.preemption_every > 0
                                    and step % self.preemption_every == 0)

  def _kept_due(self, step: int) -> bool:
    return (self.checkpoint_every > 0 and step % self.checkpoint_every == 0
            or step == self.num_train_steps)

  def maybe_save(self, step: int, state: Any, data: Any = None) -> None:
    """Saves after update `step` when a kept or a preemption checkpoint is due.

    data: the iterator that fed the run; its state is saved beside the train state when
      it has one (a Grain iterator: get_state / set_state).
    """
    if not self.due(step):
      return
    items = {_STATE: ocp.args.StandardSave(state)}
    if hasattr(data, 'get_state'):
      items[_DATA] = grain.checkpoint.CheckpointSave(data)
    manager = self.kept if self._kept_due(step) else self.preemption
    manager.save(step, args=ocp.args.Composite(**items), force=True)

  def close(self) -> None:
    """Waits for asynchronous saves to reach the disk."""
    for manager in (self.kept, self.preemption):
      manager.wait_until_finished()
      manager.close()


def check_and_save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes workdir/config.json on the first start; on a resume checks it matches.

  Raises:
    ValueError: the workdir belongs to a run of another method or condition.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      try:
        saved = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path} is not valid JSON ({e}); it should hold the run '
                         'config.') from None
    current = json.loads(config.to_json())
    for key in _MUST_MATCH:
      if key == 'condition' and not methods.get(config.method).cond_input:
        continue  # The network never sees the segmentation: one run serves every condition.
      diffs = _differences(key, _get(saved, key), _get(current, key))
      if diffs:
        field, was, now = diffs[0]
        raise ValueError(
            f'The workdir {workdir} holds a run with {field}={was!r} ({path}), but the '
            f'config asks for {field}={now!r}: its checkpoints do not fit this model. Use '
            f'another --workdir.')
    return
  if _has_checkpoints(workdir):
    raise ValueError(
        f'The workdir {workdir} holds checkpoints but no {CONFIG_FILE}: cannot tell which '
        f'method they belong to. Use another --workdir.')
  if jax.process_index() == 0:
    run_config.save(config, workdir)


def _check_shapes(metadata: Any, target: Any, where: str) -> None:
  """Names the first array whose stored shape differs from the model's, with both shapes.

  The saved-config check catches a changed model first; this catches a config.json that was
  edited by hand (orbax's own error names neither the array nor the config).
  """
  stored = _shapes(getattr(metadata, 'tree', metadata))
  wanted = _shapes(target)
  for path, shape in wanted.items():
    if path in stored and stored[path] != shape:
      raise ValueError(
          f'The checkpoint {where} does not fit this config: {path} has shape '
          f'{stored[path]} in the checkpoint but {shape} in the model. Was its config.json '
          'edited? Use the config it was trained with, or another --workdir.')


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'params/Conv_0/kernel' -> shape, for every leaf with a shape."""
  def name(k):
    for attr in ('name', 'key', 'idx'):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  leaves = jax.tree.flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  return {'/'.join(name(k) for k in path): tuple(leaf.shape)
          for path, leaf in leaves if hasattr(leaf, 'shape')}


def _get(d: dict[str, Any], dotted: str) -> Any:
  for k in dotted.split('.'):
    d = d.get(k) if isinstance(d, dict) else None
  return d


def _differences(key: str, was: Any, now: Any) -> list[tuple[str, Any, Any]]:
  """(dotted field, saved, current) of every leaf that differs under `key`."""
  if isinstance(was, dict) and isinstance(now, dict):
    out = []
    for k in sorted(set(was) | set(now)):
      out += _differences(f'{key}.{k}', was.get(k), now.get(k))
    return out
  return [] if was == now else [(key, was, now)]


def _has_checkpoints(workdir: str) -> bool:
  for sub in (KEPT_DIR, PREEMPTION_DIR):
    d = os.path.join(workdir, sub)
    if os.path.isdir(d) and any(name.isdigit() for name in os.listdir(d)):
      return True
  return False
