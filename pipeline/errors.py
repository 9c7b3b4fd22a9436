"""User-facing errors: the CLI prints their message (what is wrong, where, how to fix) and exits 2."""


class WinbackError(Exception):
    """A problem with the configuration, the input data or the model registry, not a bug."""
