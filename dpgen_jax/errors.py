"""The one exception type for mistakes a user can make.

`main.py` turns a `UserError` into one message on stderr and exit status 2, with no
traceback. Everything else (a bug) keeps its traceback.
"""


class UserError(Exception):
  """A bad config value, missing data, an unknown name: something the user can fix."""


class ConfigError(UserError):
  """A configuration value is invalid."""


class DataNotFoundError(UserError):
  """No source has the requested dataset."""


class PrivacyBudgetExceeded(UserError):
  """Training would spend more privacy than the configured budget allows."""


def require(condition: bool, message: str) -> None:
  """Raises ConfigError(message) unless condition holds."""
  if not condition:
    raise ConfigError(message)
