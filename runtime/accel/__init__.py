"""NPU-1: the simulated inference accelerator of ACCELERATOR.md section B.

``config`` (B.1 configuration and presets), ``isa`` (B.2 128-bit encoding, assembler/disassembler),
``functional`` (B.2/B.4 bit-exact semantics), ``timing`` (B.3/B.5 engines, semaphores, cycle model, deadlock
and hazard checks), ``energy`` (B.6 presets), ``report`` (B.7 JSON / text / Chrome trace), ``program`` (the
B.2 artifact container: pack/unpack/disasm), ``simulator`` (ties them together), ``workloads`` (generated
test/benchmark programs). Imports numpy and the standard library only.
"""

from .config import PRESETS, AccelConfig, load_config, preset
from .errors import (
    AccelError,
    ConfigError,
    DeadlockError,
    HazardError,
    IsaError,
    OutOfBoundsError,
    SimulationError,
)

__all__ = ["PRESETS", "AccelConfig", "AccelError", "ConfigError", "DeadlockError", "HazardError", "IsaError",
           "OutOfBoundsError", "SimulationError", "load_config", "preset"]
