"""Errors of the NPU-1 simulator (ACCELERATOR.md B). Every message names the key, field, instruction index,
buffer or semaphore at fault."""


class AccelError(Exception):
    """Base class of every NPU-1 simulator error."""


class ConfigError(AccelError, ValueError):
    """An invalid hardware configuration (B.1): the message names the key and the value."""


class IsaError(AccelError, ValueError):
    """An instruction that cannot be encoded, decoded or assembled (B.2): names the field and value."""


class SimulationError(AccelError, RuntimeError):
    """A program that cannot run: names the instruction index (pc) and opcode."""


class OutOfBoundsError(SimulationError):
    """An SRAM or DRAM access outside its buffer (B.2 semantics)."""


class DeadlockError(SimulationError):
    """Every non-empty queue is blocked and nothing is in flight (B.3); carries a queue/semaphore dump."""


class HazardError(SimulationError):
    """Two unsynchronised instructions on different engines overlap in time and in SRAM footprint (B.3)."""


class ProgramFormatError(AccelError, ValueError):
    """A program container that cannot be loaded (B.2 artifact): truncated, bad magic, newer version, corrupt,
    or compiled for another configuration."""
