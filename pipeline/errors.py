"""User-facing errors, one class per failure class: the CLI prints the message and exits with its code.

The exit codes are a contract for schedulers (cron, Airflow): docs/operations.md says what each means
and what to do. 1 is left to unexpected errors (a bug: the traceback is printed), 2 to click's own
usage errors and to bad configuration.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the `winback` command."""

    OK = 0
    UNEXPECTED = 1  # a bug: report it with the traceback
    CONFIG = 2  # params file or command-line options are invalid
    INPUT = 3  # the input data (events, contact log, a list) is unusable as given
    MODEL = 4  # no champion model, or a model that does not fit the data
    GUARD = 5  # a guard refused to publish (schema, population change, drift); --force overrides
    BUSY = 6  # another run holds the lock for the same output
    OUTPUT = 7  # an output could not be written (disk full, permissions); the last good one is intact
    RESOURCES = 8  # the engine ran out of memory or of spill space; the last good outputs are intact


class WinbackError(Exception):
    """A problem with the configuration, the input data or the model registry, not a bug."""

    exit_code: ExitCode = ExitCode.INPUT


class InputError(WinbackError):
    """The input data cannot be used as given; the message names the file, column and value."""

    exit_code = ExitCode.INPUT


class ModelError(WinbackError):
    """No usable model: none registered as champion, or one whose features the data does not have."""

    exit_code = ExitCode.MODEL


class GuardError(WinbackError):
    """A pre-publish guard failed; nothing was published."""

    exit_code = ExitCode.GUARD


class BusyError(WinbackError):
    """Another run is writing the same output."""

    exit_code = ExitCode.BUSY


class OutputError(WinbackError):
    """An output could not be written; the previously published output is unchanged."""

    exit_code = ExitCode.OUTPUT


class ResourceError(WinbackError):
    """The engine ran out of memory or of disk to spill to; the message says which params to change."""

    exit_code = ExitCode.RESOURCES
