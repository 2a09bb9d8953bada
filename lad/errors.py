"""User-facing errors: each carries a one-line message printed without a traceback."""


class LADError(Exception):
    """A mistake in the user's input (config, data, paths) rather than a bug."""


class ConfigError(LADError):
    """An invalid or incompatible configuration value."""


class DataError(LADError):
    """A missing, empty or malformed data file."""
