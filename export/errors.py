"""The exporter's user-facing error: a bad argument or input, in one line that says what to do."""


class ExportError(ValueError):
    """A bad argument or input; the message is one line that says what to do."""
