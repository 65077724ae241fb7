"""The one escaping of human-readable output: names from DIR and the command line, made inert.

Tags, file names, REFs and specs come from the user's directory or command line and may hold
any character. Printed raw, a newline forges a line (`error: ...` in `check`'s output) and an
escape sequence drives the terminal (clears the screen, rewrites the title). Every renderer of
text output and the error boundary pass such values through `safe` (JSON output needs nothing:
`json.dumps` escapes every control character).

Escaped: C0 controls (`\\n`, `\\r`, `\\t` by name, the rest as `\\xNN`: ESC is `\\x1b`), DEL and
the C1 controls (`\\x7f`, `\\x80`-`\\x9f`), the Unicode line and paragraph separators and the
bidirectional overrides and isolates (`\\u2028`, `\\u202e`, ...: they reorder or break what the
reader sees), and undecodable bytes of a file name (Python's surrogate escapes, `\\udcNN`) as the
byte they stand for (`\\xNN`). A backslash is left alone, so escaping twice changes nothing.
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# Everything but a newline: for whole texts whose lines are meant (safe_text).
_UNSAFE_IN_TEXT = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:  # os.fsdecode's stand-in for the undecodable byte n - 0xDC00
        return f"\\x{n - 0xDC00:02x}"
    return f"\\x{n:02x}" if n <= 0xFF else f"\\u{n:04x}"


def safe(value: object) -> str:
    """`value` as one inert line: no control character, no line break, nothing bidi."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # the common case, in C: nothing to escape
        return text
    return _UNSAFE.sub(_escape, text)


def safe_text(text: str) -> str:
    """A text of several lines, each made inert (its newlines kept): a last line of defence
    for a report whose fields were already escaped one by one."""
    return _UNSAFE_IN_TEXT.sub(_escape, text)
