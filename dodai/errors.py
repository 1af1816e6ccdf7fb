"""DodaiError: the one exception type a user sees, as a single line on stderr."""


class DodaiError(Exception):
    """A user-facing error. The message is one line that says what went wrong and what to do."""

    def __init__(self, message: str):
        # Keep user-facing errors to one line, whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))
