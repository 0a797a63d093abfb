"""One helper for the project's one-line error messages: the first line of an exception, never a traceback."""


def first_line(err: BaseException, limit: int | None = 200, with_type: bool = False) -> str:
    """The first non-blank line of ``err``'s message, cut at ``limit`` characters; its type's name if it has none.

    ``with_type`` prefixes ``TypeName: `` (for errors raised by libraries, whose message alone may be cryptic).
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0] if limit is None else lines[0][:limit]
    return f"{type(err).__name__}: {text}" if with_type else text
