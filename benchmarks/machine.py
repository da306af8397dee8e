"""What a benchmark records of the machine it ran on."""
import datetime
import importlib.metadata
import os
import platform
from typing import Any, Sequence


def cpu_model(cpuinfo: str = '/proc/cpuinfo') -> str:
  """The CPU's model name ('Intel(R) Xeon(R) Processor', ...), or the architecture where
  the kernel does not say (no /proc/cpuinfo, as on macOS)."""
  if os.path.exists(cpuinfo):
    with open(cpuinfo, encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  return platform.machine() or 'unknown'


def environment(dists: Sequence[str]) -> dict[str, Any]:
  """The date, the machine (CPU, cores, load average) and the versions of Python and of the
  distributions `dists` (None where one is not installed)."""
  versions: dict[str, str | None] = {'python': platform.python_version()}
  for dist in dists:
    try:
      versions[dist] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
      versions[dist] = None
  return {'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
          'machine': {'cpu': cpu_model(), 'cores': os.cpu_count(),
                      'load_average': list(os.getloadavg())},
          'versions': versions}
