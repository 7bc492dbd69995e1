"""The one exception type for mistakes a user can fix: the CLI prints it as one line, no traceback."""


class UserError(Exception):
    """Bad input or configuration. The message names the field, file or option and the fix."""
