"""The shared SSE decoder: WHATWG field rules, line ends across chunks, UTF-8 splits, big lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nonebot_plugin_llm2pic.sse import ServerSentEvent, SSEDecoder

E = ServerSentEvent


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


CASES = [
    # WHATWG spec examples (html.spec.whatwg.org, "Interpreting an event stream")
    ("spec stock ticker", b"data: YHOO\ndata: +2\ndata: 10\n\n", [E(data="YHOO\n+2\n10")]),
    (
        "spec comment and ids",
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n",
        [E(data="first event", id="1"), E(data="second event"), E(data=" third event")],
    ),
    ("spec empty data fields", b"data\n\ndata\ndata\n\ndata:", [E(data=""), E(data="\n")]),
    ("spec space optional", b"data:test\n\ndata: test\n\n", [E(data="test"), E(data="test")]),
    ("event type", b"event: add\ndata: 73857293\n\n", [E(event="add", data="73857293")]),
    (
        "event type resets",
        b"event: a\ndata: 1\n\ndata: 2\n\n",
        [E(event="a", data="1"), E(data="2")],
    ),
    ("no data no dispatch", b"event: ping\n\nid: 7\n\n", []),
    ("id persists", b"id: 5\ndata: a\n\ndata: b\n\n", [E(data="a", id="5"), E(data="b", id="5")]),
    (
        "id with NUL ignored",
        b"id: 1\ndata: a\n\nid: x\0y\ndata: b\n\n",
        [E(data="a", id="1"), E(data="b", id="1")],
    ),
    ("retry digits", b"retry: 3000\ndata: a\n\n", [E(data="a", retry=3000)]),
    (
        "retry not digits ignored",
        b"retry: 30s\ndata: a\n\nretry: +5\ndata: b\n\n",
        [E(data="a"), E(data="b")],
    ),
    ("unknown field ignored", b"foo: bar\ndata: a\n\n", [E(data="a")]),
    ("comments are keep-alives", b": OPENROUTER PROCESSING\n\n: x\ndata: a\n\n", [E(data="a")]),
    ("colon in value kept", b'data: {"a": "b:c"}\n\n', [E(data='{"a": "b:c"}')]),
    ("crlf", b"data: a\r\ndata: b\r\n\r\n", [E(data="a\nb")]),
    ("cr only", b"data: a\rdata: b\r\r", [E(data="a\nb")]),
    ("mixed line ends", b"data: a\r\ndata: b\rdata: c\n\r\n", [E(data="a\nb\nc")]),
    ("bom stripped once", b"\xef\xbb\xbfdata: a\n\n", [E(data="a")]),
    ("second bom kept", b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n", []),
    ("unterminated event dropped", b"data: a\n\ndata: b\n", [E(data="a")]),
    ("done marker is data", b"data: [DONE]\n\n", [E(data="[DONE]")]),
    ("invalid utf-8 replaced", b"data: a\xffb\n\n", [E(data="a\ufffdb")]),
    (
        "unicode separators not line ends",
        "data: a\u2028b\x0bc\n\n".encode(),
        [E(data="a\u2028b\x0bc")],
    ),
]


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_whole_stream(stream: bytes, expected: list[ServerSentEvent]) -> None:
    """Each stream fed in one chunk decodes to the expected events."""
    assert decode(stream) == expected


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_byte_by_byte(stream: bytes, expected: list[ServerSentEvent]) -> None:
    """Feeding one byte at a time gives the same events as one chunk."""
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == expected


SAMPLE = (
    "\ufeff: keep-alive\r\nevent: image_generation.completed\r\n"
    'data: {"b64_json":"iVBORw0KGgo=","note":"猫咪 🐱"}\r\n\r\n'
    "data: line one\rdata: line two\r\rid: 9\ndata: é\n\n"
).encode()


def test_every_two_way_split_decodes_identically() -> None:
    """Splitting the sample at any byte (inside CRLF, BOM, UTF-8) never changes the events."""
    expected = decode(SAMPLE)
    assert len(expected) == 3
    for cut in range(len(SAMPLE) + 1):
        assert decode(SAMPLE[:cut], SAMPLE[cut:]) == expected, cut


@given(
    lines=st.lists(
        st.sampled_from(
            ["data: x", "data:é🐱", "event: e", "id: 1", ": c", "", "retry: 5", "data"]
        ),
        max_size=30,
    ),
    ends=st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=1),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_chunking_decodes_identically(
    lines: list[str], ends: list[str], cuts: list[int]
) -> None:
    """Property: any mix of line ends and any chunking give the events of the whole stream."""
    stream = "".join(line + ends[i % len(ends)] for i, line in enumerate(lines)).encode()
    points = sorted({min(cut, len(stream)) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert decode(*chunks) == decode(stream)


def test_cr_at_chunk_end_then_lf_is_one_line_end() -> None:
    """A CR ending one chunk and an LF starting the next do not make an empty line."""
    assert decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [E(data="a\nb")]


def test_split_multibyte_character() -> None:
    """A 4-byte UTF-8 character split over three chunks decodes intact."""
    emoji = "🐱".encode()
    assert decode(b"data: " + emoji[:1], emoji[1:3], emoji[3:] + b"\n\n") == [E(data="🐱")]


def test_one_megabyte_line_in_small_chunks() -> None:
    """A 1 MB data line fed in 1 KiB chunks arrives whole (no line-length limit)."""
    payload = b"A" * (1024 * 1024)
    stream = b"data: " + payload + b"\n\n"
    chunks = [stream[i : i + 1024] for i in range(0, len(stream), 1024)]
    (event,) = decode(*chunks)
    assert event.data == payload.decode()


def test_field_name_split_across_chunks() -> None:
    """A field name cut in the middle by a chunk boundary is still recognised."""
    assert decode(b"da", b"ta", b": x", b"yz\n\n") == [E(data="xyz")]


def test_json_helper() -> None:
    """``ServerSentEvent.json`` parses the data."""
    assert E(data='{"a": 1}').json() == {"a": 1}


@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_multibyte_character_across_decode_batches(offset: int) -> None:
    """A long line of CJK text, whose characters straddle the 64 KB decode batches, stays intact."""
    text = "猫" * 50_000 + "🐱" * 10_000
    stream = b"x" * offset + b"\ndata: " + text.encode() + b"\n\n"
    chunks = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]
    assert decode(*chunks) == [E(data=text)]
