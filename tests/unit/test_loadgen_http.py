from __future__ import annotations

import pytest

from stackpanel.core.loadgen import ResponseParseError, ResponseParser
from stackpanel.core.loadgen.generator import build_request
from stackpanel.core.loadgen.target import parse_target

SIMPLE = (
    b"HTTP/1.1 200 OK\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\nserver: uvicorn\r\n"
    b"content-length: 19\r\ncontent-type: application/json\r\n\r\n"
    b'{"message":"hello"}'
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    b"5\r\nhello\r\n"
    b"1;ext=1\r\n \r\n"
    b"A\r\n0123456789\r\n"
    b"0\r\nX-Trailer: yes\r\n\r\n"
)
CLOSE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"


def feed_all(parser: ResponseParser, pieces: list[bytes]) -> list[tuple[int, bool]]:
    out: list[tuple[int, bool]] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out


def test_content_length_in_one_read() -> None:
    p = ResponseParser()
    assert p.feed(SIMPLE) == [(200, False)]
    assert p.idle


@pytest.mark.parametrize("raw", [SIMPLE, CHUNKED, CLOSE])
def test_every_split_point_and_byte_by_byte(raw: bytes) -> None:
    expected = ResponseParser().feed(raw)
    assert len(expected) == 1
    for cut in range(1, len(raw)):
        p = ResponseParser()
        assert feed_all(p, [raw[:cut], raw[cut:]]) == expected, cut
    p = ResponseParser()
    assert feed_all(p, [raw[i : i + 1] for i in range(len(raw))]) == expected


def test_chunked_with_extensions_and_trailers() -> None:
    p = ResponseParser()
    assert p.feed(CHUNKED) == [(200, False)]
    assert p.idle


def test_chunked_wins_over_content_length() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    assert ResponseParser().feed(raw) == [(200, False)]


def test_connection_close_and_http10() -> None:
    assert ResponseParser().feed(CLOSE) == [(503, True)]
    assert ResponseParser().feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n") == [(200, True)]
    assert ResponseParser().feed(
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
    ) == [(200, False)]
    assert ResponseParser().feed(b"HTTP/1.1 200 OK\r\nCONNECTION:   Close\r\nContent-Length: 0\r\n\r\n") == [
        (200, True)
    ]


def test_several_responses_in_one_read_and_leftovers() -> None:
    p = ResponseParser()
    two = SIMPLE + SIMPLE
    assert p.feed(two + SIMPLE[:30]) == [(200, False), (200, False)]
    assert not p.idle
    assert p.feed(SIMPLE[30:]) == [(200, False)]


def test_body_until_close() -> None:
    p = ResponseParser()
    assert p.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome") == []
    assert p.feed(b" more") == []
    assert p.feed_eof() == (200, True)


def test_no_body_statuses_and_head() -> None:
    assert ResponseParser().feed(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n") == [(204, False)]
    assert ResponseParser().feed(b"HTTP/1.1 304 Not Modified\r\n\r\n") == [(304, False)]
    head = ResponseParser(head_only=True)
    assert head.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n") == [(200, False)]


def test_interim_100_continue_is_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    assert ResponseParser().feed(raw) == [(201, False)]


def test_status_line_without_reason_phrase() -> None:
    assert ResponseParser().feed(b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n") == [(404, False)]


def test_eof_between_responses_is_clean_and_mid_response_is_an_error() -> None:
    p = ResponseParser()
    p.feed(SIMPLE)
    assert p.feed_eof() is None
    p = ResponseParser()
    p.feed(SIMPLE[:-3])
    with pytest.raises(ResponseParseError):
        p.feed_eof()
    p = ResponseParser()
    p.feed(CHUNKED[:60])
    with pytest.raises(ResponseParseError):
        p.feed_eof()


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_garbage_is_a_parse_error(raw: bytes) -> None:
    with pytest.raises(ResponseParseError):
        ResponseParser().feed(raw)


def test_endless_head_is_an_error_not_a_memory_leak() -> None:
    p = ResponseParser()
    p.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ResponseParseError):
        for _ in range(100):
            p.feed(b"X-Junk: " + b"a" * 1000 + b"\r\n")


def test_request_bytes() -> None:
    t = parse_target("http://127.0.0.1:8080/api/hello?x=1")
    req = build_request(t, "GET", (("X-Test", "1"),))
    assert req == (
        b"GET /api/hello?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: stackpanel-loadgen\r\n"
        b"Accept: */*\r\nX-Test: 1\r\n\r\n"
    )
