"""Process-wide set-up, made once by every entry point (and notebook) before JAX starts."""

from absl import logging

from ensembles.training import devices


def start_process() -> None:
  """Quiet library logs, and on a CPU-only machine one JAX device per core
  (``devices.use_cpu_cores``; a device count the user chose wins)."""
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  devices.use_cpu_cores()
