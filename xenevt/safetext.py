"""The one escaping of outside text (xenstore values, file names, names read from cores) for a terminal.

A value another domain or a file chose may hold escape sequences, C1 controls or bidi overrides that would
move the cursor, retitle the window or hide what follows.  Every view and every error message that shows such
text passes it through ``term`` once, here, so the rule cannot drift between commands.  JSON needs nothing
more: ``json.dumps`` (ASCII, as every writer here uses it) escapes every character outside space..tilde.
"""

from __future__ import annotations

__all__ = ["term", "term_bytes"]


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def term(text: str) -> str:
    r"""``text`` with every character a terminal would act on shown as an escape (``\x1b``, ``\u202e``).

    Printable characters (space and letters of any script) pass unchanged; control characters (C0, DEL, C1),
    format characters (bidi overrides, zero-width joiners), line and paragraph separators, and lone surrogates
    (undecodable bytes) do not.  A tab or newline inside one value is escaped too: a value is one field.
    """
    if text.isprintable():  # the common case: one C scan, no copy
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def term_bytes(data: bytes) -> str:
    r"""Bytes from outside (a section name, a file's line) as text for a terminal: UTF-8 where it decodes,
    ``\xNN`` for each byte that does not, then ``term``."""
    return term(data.decode("utf-8", "backslashreplace"))
