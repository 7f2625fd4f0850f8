"""The one exception type for user mistakes.

Anything a user can cause (a missing file, a bad option, an image that is not an image) raises
:class:`OneshotError` with a one-line message that says what to do. The CLI prints that line and exits
non-zero; programming errors still raise ordinary exceptions with tracebacks.
"""


class OneshotError(Exception):
    """A user-facing error: its message is one line that says what went wrong and what to do."""


class OneshotWarning(UserWarning):
    """Something a user should know that does not stop the work (e.g. a text truncated to the encoder's limit);
    the CLI prints it as one ``warning: ...`` line on stderr."""
