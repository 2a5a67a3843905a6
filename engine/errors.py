"""User-facing errors of the engine, importable without torch (the CLI catches them to print one line)."""


class DataError(RuntimeError):
    """A data problem the user can fix (missing files, bad name, bad split); the message is one line."""
