"""Data parallelism with `jax.jit` and `NamedSharding` over a 1-D device mesh.

Every device of every process sits on one mesh axis, 'data'. Parameters and optimiser
state are replicated; a batch is split along its leading (example) axis. A jitted train
step whose loss is a mean over the sharded batch then averages gradients over the global
batch by itself: XLA inserts the all-reduce.

Multi-host: call `maybe_initialize_distributed()` before any other JAX call. Each
process reads its own share of the data (the input pipeline's per-host batch is
`global_batch // jax.process_count()`), and `global_batch_from_local` assembles the
global array from the per-process pieces.
"""
import os
from typing import Any, Mapping

from absl import logging
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
import numpy as np

DATA_AXIS = 'data'

# Environment variables read by `maybe_initialize_distributed` (JAX itself also reads
# JAX_COORDINATOR_ADDRESS).
ENV_COORDINATOR = 'JAX_COORDINATOR_ADDRESS'   # host:port of process 0.
ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'       # Total number of processes.
ENV_PROCESS_ID = 'JAX_PROCESS_ID'             # This process's index, 0..N-1.
ENV_AUTO = 'SCORE_SDE_KNEE_DISTRIBUTED'       # '1': JAX detects the cluster (SLURM, TPU).


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None,
                                 env: Mapping[str, str] | None = None) -> bool:
  """Starts multi-host JAX when asked to; returns whether it did.

  Arguments override the environment variables JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID. With none of them set, multi-host starts only
  if SCORE_SDE_KNEE_DISTRIBUTED=1, in which case `jax.distributed.initialize()` detects
  the cluster itself (SLURM, Open MPI, Cloud TPU). A single process (num_processes
  unset or 1) does nothing. Must run before any other JAX call. Example, two hosts:

      JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \
          python main.py --mode=train ...     # and JAX_PROCESS_ID=1 on the other host.

  On CPU, collectives across processes use gloo.
  """
  env = os.environ if env is None else env
  coordinator_address = coordinator_address or env.get(ENV_COORDINATOR) or None
  if num_processes is None and env.get(ENV_NUM_PROCESSES):
    num_processes = _env_int(env, ENV_NUM_PROCESSES)
  if process_id is None and env.get(ENV_PROCESS_ID):
    process_id = _env_int(env, ENV_PROCESS_ID)
  auto = env.get(ENV_AUTO, '') == '1'
  if not auto and (num_processes is None or num_processes <= 1):
    return False
  if not auto and (coordinator_address is None or process_id is None):
    raise ValueError(
        f'Multi-host training with num_processes={num_processes} needs a coordinator '
        f'address ({ENV_COORDINATOR}, got {coordinator_address!r}) and a process id '
        f'({ENV_PROCESS_ID}, got {process_id!r}).')
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info('Distributed JAX: process %d of %d, %d local / %d global devices.',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def _env_int(env: Mapping[str, str], name: str) -> int:
  try:
    return int(env[name])
  except ValueError:
    raise ValueError(f'Environment variable {name} must be an integer, got '
                     f'{env[name]!r}.') from None


def make_mesh() -> Mesh:
  """A 1-D mesh named 'data' over all devices of all processes.

  Auto axis types: shardings are propagated by XLA, so the model code never names axes.
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(AxisType.Auto,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Split the leading (batch) axis across the mesh; other axes whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device (parameters, optimiser state, RNG, step)."""
  return NamedSharding(mesh, PartitionSpec())


def check_batch(batch_size: int, num_devices: int | None = None,
                num_processes: int | None = None) -> int:
  """Checks a global batch size; returns the per-process (host) batch size.

  Raises ValueError unless batch_size is a positive multiple of the device count
  (default: all devices of all processes).
  """
  num_devices = jax.device_count() if num_devices is None else num_devices
  num_processes = jax.process_count() if num_processes is None else num_processes
  if batch_size <= 0 or batch_size % num_devices:
    raise ValueError(
        f'Global batch size {batch_size} (config.training.batch_size) must be a positive '
        f'multiple of the number of devices {num_devices}: each device takes an equal '
        f'share.')
  return batch_size // num_processes


def global_batch_from_local(local_batch: Any, mesh: Mesh, *, stacked: bool = False) -> Any:
  """Assembles global arrays, sharded along 'data', from each process's own batch.

  Args:
    local_batch: a pytree of host arrays whose leading axis is this process's share,
      global_batch // process_count examples.
    mesh: from `make_mesh()`.
    stacked: the leaves are (k, local batch, ...): k batches for k steps in one call,
      sharded along their second axis.
  Returns:
    The same pytree of global `jax.Array`s with (leading, or second if stacked) axis
    global_batch.
  """
  sharding = (NamedSharding(mesh, PartitionSpec(None, DATA_AXIS)) if stacked
              else data_sharding(mesh))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      local_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree, identical on every process, replicated on the mesh.

  Multi-host: each process fills its own devices from its own host copy, so no array
  crosses hosts (the values must agree, e.g. computed from the same seed).
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, jax.device_get(tree))
