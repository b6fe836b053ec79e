"""The one exception type a user can cause."""


class ReusevosError(Exception):
    """A problem with the user's input, files or settings.

    The message names the file or value at fault and says what to do. The command line prints it
    as one line on stderr and exits non-zero; library callers catch this one type.
    """
