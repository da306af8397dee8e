"""What a benchmark records of the machine it ran on."""
import os
import platform


def cpu_model(cpuinfo: str = '/proc/cpuinfo') -> str:
  """The CPU's model name ('Intel(R) Xeon(R) Processor', ...), or the architecture where
  the kernel does not say (no /proc/cpuinfo, as on macOS)."""
  if os.path.exists(cpuinfo):
    with open(cpuinfo, encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  return platform.machine() or 'unknown'
