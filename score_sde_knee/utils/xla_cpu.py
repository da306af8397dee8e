"""An XLA:CPU flag that makes NCSN++ faster on a CPU; the entry points set it before JAX starts.

jaxlib 0.10 hands XLA:CPU's convolutions to YNNPACK by default. For NCSN++'s few-channel
3x3 convolutions (16-32 channels at the cpu scale) XLA's own convolutions are faster: a
cpu-scale training step 1.2-1.3x, a forward pass ~1.25x (`python -m benchmarks.xla_cpu_flags`,
benchmarks/RESULTS.md). Only the CPU backend reads the flag; GPU programs are unchanged.

XLA reads XLA_FLAGS once, when its first backend starts, so `configure()` must run before
JAX's first computation (importing jax is fine). A user's own ynn_fusion_type setting wins:
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION`
keeps jaxlib's default.
"""
import importlib.metadata
import os
from collections.abc import MutableMapping

FAST_CONV_FLAG = ('--xla_cpu_experimental_ynn_fusion_type='
                  '-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION')
# XLA aborts the process on a flag it does not know, and this one is experimental: add it
# only on the jaxlib versions where it exists and was measured.
MEASURED_JAXLIB = ('0.10.',)


def with_fast_convolutions(xla_flags: str, jaxlib_version: str) -> str:
  """xla_flags with FAST_CONV_FLAG added, unless it does not apply or the user chose."""
  if 'ynn_fusion_type' in xla_flags or not jaxlib_version.startswith(MEASURED_JAXLIB):
    return xla_flags
  return f'{xla_flags} {FAST_CONV_FLAG}'.strip()


def configure(environ: MutableMapping[str, str] = os.environ) -> None:
  """Adds FAST_CONV_FLAG to environ['XLA_FLAGS'] where it applies (see the module doc)."""
  try:
    version = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return
  flags = with_fast_convolutions(environ.get('XLA_FLAGS', ''), version)
  if flags:
    environ['XLA_FLAGS'] = flags
