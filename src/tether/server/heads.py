"""Measuring HTTP request heads as their bytes arrive, for `max_header_size` (431).

A request's head is every byte from the end of the previous request (or the connection's
start), blank lines included, to the end of its header block, across reads. httptools
reports only the URL, the names and the values, so the bytes between them (whitespace,
blank lines, a request line padded with spaces) would pass unmeasured: instead the
protocol feeds the parser in pieces cut by `HeadMeter.next_piece`, which measures each head
before the parser sees it and refuses the one that would pass the limit.

A piece ends where the next head begins (after a Content-Length body, or a head with
none), or at the end of the read when no other head can end in it: then a head that
begins in the piece is still open at its end and counted once the parser has been fed
(`piece_fed`). The one estimate: a head that begins where a chunked body ends, in the same
read, is held to the limit by what the parser reports of it (`seen`), which bounds what is
stored. No I/O here: the protocol tells the meter where the parser is.
"""

from __future__ import annotations

import re

__all__ = ["HeadMeter"]

_HEAD_END = b"\r\n\r\n"
_BLANK_LINES = re.compile(rb"[\r\n]+")  # before a request: skipped by the parser, part of its head
_CR_LF = b"\r\n"
# A head has at least these bytes besides its URL and header lines: "GET " + " HTTP/1.1\r\n"
# and the blank line that ends it.
_MIN_HEAD_FRAME = 17


class HeadMeter:
    """The size of the request head in progress, on one connection. `over` turns True, and
    stays, once a head passes `limit` bytes; `in_message` is True from a request's first
    byte to its end."""

    __slots__ = ("limit", "over", "_head_open", "in_message", "_size", "_tail", "_seen", "_seen_limit",
                 "_headers", "_body_total", "_last_body", "_may_begin")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.over = False
        # Where the parser is: in a head (or between requests, where the next byte starts
        # one), or in a message at all; the open head's size so far and its last bytes.
        self._head_open = True
        self.in_message = False
        self._size = 0
        self._tail = b""
        # What the parser reported of the head (URL, names, values, the shortest
        # punctuation): at most its size. Over past `_seen_limit`.
        self._seen = 0
        self._seen_limit = limit - _MIN_HEAD_FRAME
        self._headers: list[tuple[str, str]] = []
        self._body_total: int | None = None  # once read from the head; -1: chunked, unknown
        self._last_body = 0  # the body size of the last complete request
        self._may_begin: int | None = None  # see `piece_fed`

    # -- the reads -------------------------------------------------------------------------
    def next_piece(self, data: bytes, pos: int, end: int, body_received: int) -> int:
        """Where the next piece of `data[pos:end]` to feed the parser ends (see the module
        doc); `body_received` is what the parser has given of the body in progress. A head
        that would pass the limit sets `over` and ends the piece where the limit is: the
        parser sees none of the excess, and what it does see may still be malformed (400)."""
        self._may_begin = None
        if not self._head_open:  # a body
            total = self._body_total
            if total is None:
                total = self._body_total = self._body_length()
            if total < 0:
                self._may_begin = -1
                return end
            return min(end, pos + total - body_received)
        room = self.limit - self._size
        ended = False
        if not self.in_message and data[pos] in _CR_LF:
            match = _BLANK_LINES.match(data, pos)
            assert match is not None
            stop = match.end()
        else:
            # The parser is strict: after a request line, the first blank line ends the head.
            tail = self._tail
            found = (tail + data[:3]).find(_HEAD_END) if tail else -1
            if found >= 0:  # one split across reads ends in this read's first bytes
                stop = found + 4 - len(tail)
            else:
                found = data.find(_HEAD_END, pos, pos + room)
                stop = found + 4
            ended = found >= 0
            if not ended:  # the head goes on in the next read
                stop = end
                self._tail = (self._tail + data[max(pos, end - 3):end])[-3:]
        if stop - pos > room or (stop - pos == room and not ended):
            self.over = True  # over the limit, or at it and not ended
            return pos + room
        self._size += stop - pos
        if ended and stop < end and data.find(_HEAD_END, stop, end) < 0:
            self._may_begin = stop
            return end
        return stop

    def piece_fed(self, data: bytes, stop: int) -> None:
        """The parser was fed the piece that ended at `stop`. If a request head began inside
        it and goes on in the next read (its request line, or only the blank lines before
        it), count what it has so far: from where the head before it ended, past that head's
        body (a Content-Length or none, since a chunked body ends with a blank line), or
        after a chunked body, which does not say where it ended, what the parser reported of
        it (a little less, never more)."""
        after = self._may_begin
        if after is None or not self._head_open:
            return
        if after >= 0:
            self._size = stop - after - self._last_body
        else:
            self._size = self._seen if self.in_message else 0
        if self.in_message:  # (blank lines alone need no tail: the next read skips over them)
            self._tail = data[max(0, stop - 3):stop]
        if self._size >= self.limit:
            self.over = True

    def _body_length(self) -> int:
        """The body's length by the head just parsed (whose framing headers the parser has
        checked: digits, no conflicts), -1 for a chunked one."""
        for name, value in self._headers:
            lower = name.lower()
            if lower == "transfer-encoding":
                return -1
            if lower == "content-length":
                return int(value)
        return 0

    # -- what the parser reports -------------------------------------------------------------
    def message_begun(self) -> None:
        self.in_message = True
        self._seen = 0
        self._body_total = None

    def seen(self, size: int) -> bool:
        """The parser reported `size` bytes of the head (a URL part, a header line's least):
        False, and `over`, once what it reported cannot fit the limit."""
        self._seen += size
        if self._seen > self._seen_limit:
            self.over = True
            return False
        return True

    def head_ended(self, headers: list[tuple[str, str]]) -> None:
        """The head is complete; `headers` say how long its body is."""
        self._head_open = False
        self._tail = b""
        self._headers = headers

    def message_ended(self, body_size: int) -> None:
        self._head_open = True
        self.in_message = False
        self._size = 0
        self._last_body = body_size
