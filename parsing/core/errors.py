"""Error types for bad input. CLIs turn these into one line on stderr and exit code 2."""


class InputError(ValueError):
    """Bad input from the user: a file, an argument, a label map."""


class LabelError(InputError):
    """A label map or label name that does not fit its label set."""


class DataError(InputError):
    """A data file that is missing, unreadable, corrupt or inconsistent; names the file."""


class MissingDependencyError(InputError, ImportError):
    """An optional package is not installed, or a plugin module (``--import``) not imported;
    the message says what to do."""
