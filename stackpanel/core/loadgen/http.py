"""Incremental HTTP/1.x response parser, tuned for the load generator's hot path.

It only needs what a load generator needs: the status code, where the response ends
(Content-Length, chunked, or end of connection), and whether the server will close the
connection. Header values other than those three are never decoded. The common case (a whole
small response in one read, nothing buffered) slices the received bytes in place without copying
them into a buffer.
"""
from __future__ import annotations

import re

_HEAD = 0
_BODY = 1  # Content-Length bytes remaining
_CHUNK_SIZE = 2
_CHUNK_DATA = 3
_CHUNK_CRLF = 4
_TRAILER = 5
_BODY_EOF = 6  # no length: the body ends when the connection closes

MAX_HEAD = 64 * 1024
MAX_LINE = 8 * 1024

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")
_CL = b"\r\ncontent-length:"
_TE = b"\r\ntransfer-encoding:"
_CONN = b"\r\nconnection:"


class ResponseParseError(ValueError):
    """The bytes received are not a valid HTTP/1.x response."""


def _header_value(lower_head: bytes, name: bytes, start: int = 0) -> tuple[bytes | None, int]:
    i = lower_head.find(name, start)
    if i < 0:
        return None, -1
    j = lower_head.find(b"\r\n", i + len(name))
    if j < 0:
        j = len(lower_head)
    return lower_head[i + len(name) : j].strip(), j


class ResponseParser:
    """Feed bytes in; get back the responses they complete, as ``(status, will_close)`` pairs.

    ``head_only=True`` parses responses to HEAD requests (no body whatever the headers say).
    A parser is used for one connection; after ``feed_eof`` or an error, make a new one.
    """

    __slots__ = ("_buf", "_close", "_remaining", "_state", "_status", "head_only")

    def __init__(self, head_only: bool = False) -> None:
        self.head_only = head_only
        self._buf = b""
        self._state = _HEAD
        self._remaining = 0
        self._status = 0
        self._close = False

    @property
    def idle(self) -> bool:
        """True between responses (nothing of the next response received yet)."""
        return self._state == _HEAD and not self._buf

    def feed(self, data: bytes) -> list[tuple[int, bool]]:
        """Consume ``data``; return the responses completed by it (usually zero or one)."""
        if self._buf:
            buf = self._buf + data
        else:
            buf = data
        n = len(buf)
        pos = 0
        done: list[tuple[int, bool]] = []
        state = self._state
        while pos < n:
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if n - pos > MAX_HEAD:
                        raise ResponseParseError(f"response head longer than {MAX_HEAD} bytes")
                    break
                state = self._parse_head(buf, pos, end)
                pos = end + 4
                if state == _HEAD:  # no body: complete (or an interim 1xx, which reports nothing)
                    if self._status >= 200:
                        done.append((self._status, self._close))
                        if self._close:
                            pos = n  # nothing may follow a response the server closes after
                    continue
            elif state == _BODY:
                avail = n - pos
                if avail >= self._remaining:
                    pos += self._remaining
                    self._remaining = 0
                    state = _HEAD
                    done.append((self._status, self._close))
                    if self._close:
                        pos = n
                else:
                    self._remaining -= avail
                    pos = n
            elif state == _CHUNK_SIZE:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > MAX_LINE:
                        raise ResponseParseError("chunk-size line too long")
                    break
                line = buf[pos:eol]
                semi = line.find(b";")
                if semi >= 0:
                    line = line[:semi]
                line = line.strip(b" \t")
                if not _HEX.match(line):
                    raise ResponseParseError(f"bad chunk size {bytes(line)[:20]!r}")
                size = int(line, 16)
                pos = eol + 2
                if size == 0:
                    state = _TRAILER
                else:
                    self._remaining = size
                    state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                avail = n - pos
                if avail >= self._remaining:
                    pos += self._remaining
                    self._remaining = 0
                    state = _CHUNK_CRLF
                else:
                    self._remaining -= avail
                    pos = n
            elif state == _CHUNK_CRLF:
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ResponseParseError("chunk data not followed by CRLF")
                pos += 2
                state = _CHUNK_SIZE
            elif state == _TRAILER:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > MAX_HEAD:
                        raise ResponseParseError("chunked trailer too long")
                    break
                if eol == pos:  # empty line: end of the message
                    pos += 2
                    state = _HEAD
                    done.append((self._status, self._close))
                    if self._close:
                        pos = n
                else:
                    pos = eol + 2
            else:  # _BODY_EOF
                pos = n
        self._state = state
        self._buf = buf[pos:] if pos < n else b""
        return done

    def feed_eof(self) -> tuple[int, bool] | None:
        """The connection closed. Return the response this completes (body-until-close), if any.

        Raises :class:`ResponseParseError` when a response was cut off mid-way; returns None when
        the connection closed cleanly between responses.
        """
        state = self._state
        self._state = _HEAD
        buf, self._buf = self._buf, b""
        if state == _BODY_EOF:
            return (self._status, True)
        if state == _HEAD and not buf:
            return None
        raise ResponseParseError("connection closed in the middle of a response")

    def _parse_head(self, buf: bytes, pos: int, end: int) -> int:
        """Parse the status line and framing headers of buf[pos:end]; return the next state."""
        line_end = buf.find(b"\r\n", pos, end)
        if line_end < 0:
            line_end = end
        # "HTTP/1.1 200 OK" -- the reason phrase is optional, the space after the code too.
        if (
            line_end - pos < 12
            or buf[pos : pos + 7] != b"HTTP/1."
            or buf[pos + 8] != 0x20
            or (line_end - pos > 12 and buf[pos + 12] != 0x20)
        ):
            raise ResponseParseError(f"bad status line {bytes(buf[pos:line_end])[:60]!r}")
        code = buf[pos + 9 : pos + 12]
        if not code.isdigit():
            raise ResponseParseError(f"bad status code {bytes(code)!r}")
        status = int(code)
        if status < 100:
            raise ResponseParseError(f"bad status code {status}")
        http10 = buf[pos + 7] == 0x30  # "0"
        self._status = status

        if line_end < end:
            head = buf[line_end:end].lower() + b"\r\n"
        else:
            head = b""

        conn, _ = _header_value(head, _CONN) if head else (None, -1)
        if conn is None:
            close = http10
        elif b"close" in conn:
            close = True
        else:
            close = http10 and b"keep-alive" not in conn
        self._close = close

        if status < 200:
            if status == 101:
                raise ResponseParseError("server switched protocols (101); not an HTTP/1.1 response")
            return _HEAD  # interim response: the real one follows
        if self.head_only or status == 204 or status == 304:
            return _HEAD

        te, _ = _header_value(head, _TE) if head else (None, -1)
        if te is not None and te.rstrip().endswith(b"chunked"):
            return _CHUNK_SIZE
        cl, after = _header_value(head, _CL) if head else (None, -1)
        if cl is not None:
            if not cl.isdigit():
                raise ResponseParseError(f"bad Content-Length {cl[:20]!r}")
            length = int(cl)
            again, _ = _header_value(head, _CL, after)
            if again is not None and again != cl:
                raise ResponseParseError("conflicting Content-Length headers")
            if length == 0:
                return _HEAD
            self._remaining = length
            return _BODY
        # No framing: the body runs to the end of the connection.
        self._close = True
        return _BODY_EOF
