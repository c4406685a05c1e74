"""Where a JSON text stands: inside a string or not, and how deep.

:class:`JsonScan` reads a call body incrementally, as it is collected, and
answers two questions the parser asks only at a tag: is the body inside an open
JSON string (a tag there is text, not structure), and where does the body's
first value close (calls that end when their JSON balances). It is a lexer,
not a parser: it tracks quotes, backslash escapes and bracket depth, and
nothing else, so malformed JSON never stops it. :class:`PyScan` does the same
for Python literals (a pythonic call list ``[f(a='x'), g()]``): strings in
single or double quotes, and ``(`` brackets too. A triple-quoted string reads
as three strings, which balances the same unless it holds its own quote.
"""

from __future__ import annotations

__all__ = ["JsonScan", "PyScan"]


class JsonScan:
    """An incremental quote/escape/depth tracker over text fed in order.

    Attributes:
        in_string: Whether the text so far ends inside an open string.
        depth: ``{``/``[`` minus ``}``/``]`` seen outside strings.
        opened: Whether any bracket was opened yet.
    """

    __slots__ = ("_escape", "depth", "in_string", "opened")

    def __init__(self) -> None:
        self.in_string = False
        self._escape = False
        self.depth = 0
        self.opened = False

    def feed(self, text: str) -> None:
        """Read ``text`` (the next part of the body)."""
        self.balance(text)

    def balance(self, text: str) -> int:
        """Read ``text``; return the index just past the bracket that brings the
        depth back to 0 after it was opened, or -1 (the whole text was read)."""
        in_string, escape, depth = self.in_string, self._escape, self.depth
        for i in range(len(text)):
            ch = text[i]
            if in_string:
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "{[":
                depth += 1
                self.opened = True
            elif ch in "}]":
                depth -= 1
                if depth == 0 and self.opened:
                    self.in_string, self._escape, self.depth = in_string, escape, depth
                    return i + 1
        self.in_string, self._escape, self.depth = in_string, escape, depth
        return -1


class PyScan:
    """:class:`JsonScan` for Python literals: ``'`` or ``"`` strings, ``([{`` brackets."""

    __slots__ = ("_escape", "_quote", "depth", "in_string", "opened")

    def __init__(self) -> None:
        self.in_string = False
        self._quote = ""
        self._escape = False
        self.depth = 0
        self.opened = False

    def feed(self, text: str) -> None:
        """Read ``text`` (the next part of the body)."""
        self.balance(text)

    def balance(self, text: str) -> int:
        """As :meth:`JsonScan.balance`."""
        quote, escape, depth = self._quote, self._escape, self.depth
        for i in range(len(text)):
            ch = text[i]
            if quote:
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif ch == quote:
                    quote = ""
            elif ch == '"' or ch == "'":
                quote = ch
            elif ch in "([{":
                depth += 1
                self.opened = True
            elif ch in ")]}":
                depth -= 1
                if depth == 0 and self.opened:
                    self._quote, self._escape, self.depth = quote, escape, depth
                    self.in_string = bool(quote)
                    return i + 1
        self._quote, self._escape, self.depth = quote, escape, depth
        self.in_string = bool(quote)
        return -1
