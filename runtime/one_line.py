"""One helper for the project's one-line error messages: the first line of an exception, never a traceback."""


def first_text_line(text: str, limit: int | None = 200) -> str:
    """The first non-blank line of ``text``, stripped and cut at ``limit`` characters; "" when it has none."""
    line = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    return line if limit is None else line[:limit]


def first_line(err: BaseException, limit: int | None = 200, with_type: bool = False) -> str:
    """The first non-blank line of ``err``'s message, cut at ``limit`` characters; its type's name if it has none.

    ``with_type`` prefixes ``TypeName: `` (for errors raised by libraries, whose message alone may be cryptic).
    """
    text = first_text_line(str(err), limit)
    if not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text}" if with_type else text
