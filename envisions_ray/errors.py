"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """Bad config, data, model path or run directory: reported in one line, exit code 2."""
