"""Errors a user can act on: the CLI prints them without a traceback and exits with 2."""


class UserError(Exception):
    """Bad input (file, key or value): the message names it and says what was expected."""


class ConfigError(UserError, ValueError):
    """An invalid configuration key or value."""


class CorpusError(UserError):
    """The input is not a usable corpus at all (individual bad files are reported, not raised)."""


class StoreError(UserError):
    """A feature store that is missing, incomplete or of an incompatible version."""
