"""Expected-failure exceptions shared by every stage of the flow.

The CLI turns an `NlpAttnError` into one line on stderr and exit status 2; anything
else is a bug and exits 1.
"""


class NlpAttnError(Exception):
    """A failure the user can fix: bad config, bad data, a missing or corrupt file."""


class ConfigError(NlpAttnError, ValueError):
    """The configuration is invalid: an unknown key, a bad type or value."""


class DataError(NlpAttnError):
    """The data cannot be read or does not make a usable classification task."""


class RunError(NlpAttnError):
    """A run directory is missing, incomplete or not what a command expects."""
