"""The one exception type for bad user input, shared by library and CLI."""


class InputError(ValueError):
    """Bad input (file, option, data): the message names the problem and the fix.

    The CLI prints it as one line and exits with status 2; anything else is a bug and keeps its
    traceback.
    """
