"""User-facing errors of the engine, importable without torch (the CLI catches them to print one line)."""


class DataError(RuntimeError):
    """A data problem the user can fix (missing files, bad name, bad split); the message is one line."""


class UnsafePathError(RuntimeError):
    """A file repro would write is a symbolic link (or a hard link to another file); never written through."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt so that a run records itself as killed (resumable) on the way out."""

    signum = 15


class DeviceError(RuntimeError):
    """A device that was asked for and is not there (bad usage: exit 2, nothing written)."""
