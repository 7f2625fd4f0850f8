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


def os_reason(exc: OSError) -> str:
    """What an operating-system error means for the user: ``no space left on the device``, ``read-only file
    system``, ``permission denied`` ... (falls back on the system's own words)."""
    import errno

    reasons = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "it is a folder",
        errno.ENOENT: "the folder does not exist",
        errno.ENOTDIR: "a parent is not a folder",
    }
    return reasons.get(exc.errno or 0, exc.strerror or str(exc))
