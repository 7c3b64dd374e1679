"""SSE decoding throughput: ``nonebot_plugin_llm2pic.sse`` vs httpx-sse 0.4.3 vs openai's decoder.

What: one ``image_generation.completed`` event whose ``data:`` line carries a 20 MB base64 image
(the shape of a streamed GPT-image answer), fed in 1, 4 and 16 KB chunks. Each decoder gets the
same pre-split byte chunks and must yield exactly one event with the whole payload:

- ours: ``SSEDecoder.feed(chunk)`` per chunk, then ``close()``;
- httpx-sse: what ``EventSource.aiter_sse`` does — an incremental UTF-8 decoder (as httpx's
  ``aiter_text``), ``SSELineDecoder.decode`` and ``SSEDecoder.decode`` per line;
- openai: ``openai._streaming.SSEDecoder().iter_bytes`` (the decoder the official client uses).

Rounds interleave the three so they share the machine's state; figures are the median of the
rounds with min–max. The speed-up is judged per round (the baseline's time over ours in the
same round, so a busy moment on a shared machine hits both), median with min–max. Linearity:
our time per MB at 20 MB vs at 2 MB (budget ≤ 2×).

Budget: ours ≥ 2× httpx-sse throughput at every chunk size; linear.

Run from the repository root: ``.venv/bin/python -m bench.sse_decode`` (about 30 s on 2 cores).
"""

from __future__ import annotations

import base64
import codecs
import gc
import json
import random
import time
from collections.abc import Callable

from httpx_sse._decoders import SSEDecoder as HttpxSSEDecoder
from httpx_sse._decoders import SSELineDecoder as HttpxLineDecoder
from openai._streaming import SSEDecoder as OpenAISSEDecoder

from nonebot_plugin_llm2pic.sse import SSEDecoder

from ._stats import machine, summary, verdict

ROUNDS = 9
CHUNK_SIZES = (1024, 4096, 16384)
BIG = 20 * 1024 * 1024
SMALL = 2 * 1024 * 1024


def make_stream(size: int) -> tuple[bytes, int]:
    """One named SSE event whose data line is about ``size`` bytes; returns (stream, b64 length)."""
    raw = random.Random(size).randbytes(size * 3 // 4)
    b64 = base64.b64encode(raw).decode("ascii")
    payload = json.dumps(
        {
            "type": "image_generation.completed",
            "b64_json": b64,
            "output_format": "png",
            "size": "1024x1024",
        }
    )
    stream = f"event: image_generation.completed\ndata: {payload}\n\ndata: [DONE]\n\n"
    return stream.encode(), len(payload)


def split(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def ours(chunks: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    out = []
    for chunk in chunks:
        out += [event.data for event in decoder.feed(chunk)]
    out += [event.data for event in decoder.close()]
    return out


def httpx_sse(chunks: list[bytes]) -> list[str]:
    text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    lines = HttpxLineDecoder()
    decoder = HttpxSSEDecoder()
    out = []
    for chunk in chunks:
        for line in lines.decode(text_decoder.decode(chunk)):
            event = decoder.decode(line.rstrip("\n"))
            if event is not None:
                out.append(event.data)
    for line in lines.flush():
        event = decoder.decode(line.rstrip("\n"))
        if event is not None:
            out.append(event.data)
    return out


def openai_sse(chunks: list[bytes]) -> list[str]:
    return [event.data for event in OpenAISSEDecoder().iter_bytes(iter(chunks))]


DECODERS: dict[str, Callable[[list[bytes]], list[str]]] = {
    "ours": ours,
    "httpx-sse": httpx_sse,
    "openai": openai_sse,
}


def timed(decode: Callable[[list[bytes]], list[str]], chunks: list[bytes], payload: int) -> float:
    gc.collect()
    started = time.perf_counter()
    events = decode(chunks)
    elapsed = time.perf_counter() - started
    # Both decoders must see the image event and the [DONE] event, whole.
    assert len(events) == 2, events[1:]
    assert len(events[0]) == payload, len(events[0])
    assert events[1] == "[DONE]", events[1:]
    return elapsed


def main() -> int:
    print(f"SSE decoding, one {BIG // 2**20} MB base64 data: event — {machine()}")
    big, big_payload = make_stream(BIG)
    small, small_payload = make_stream(SMALL)
    mb_big, mb_small = len(big) / 2**20, len(small) / 2**20
    ok = True
    for chunk_size in CHUNK_SIZES:
        chunks = split(big, chunk_size)
        small_chunks = split(small, chunk_size)
        times: dict[str, list[float]] = {name: [] for name in DECODERS}
        small_times: list[float] = []
        for round_ in range(ROUNDS):
            names = list(DECODERS)
            names = names[round_ % 3 :] + names[: round_ % 3]  # rotate who goes first
            for name in names:
                times[name].append(timed(DECODERS[name], chunks, big_payload))
            small_times.append(timed(ours, small_chunks, small_payload))
        throughput = {name: mb_big / summary(t)[0] for name, t in times.items()}
        print(f"\n{chunk_size // 1024} KB chunks ({len(chunks)} chunks):")
        for name, samples in times.items():
            med, low, high = summary(samples)
            print(
                f"  {name:10s} {med * 1000:8.1f} ms ({low * 1000:.1f}–{high * 1000:.1f})  "
                f"{throughput[name]:8.0f} MB/s"
            )
        paired = [h / o for h, o in zip(times["httpx-sse"], times["ours"], strict=True)]
        paired_openai = [h / o for h, o in zip(times["openai"], times["ours"], strict=True)]
        ratio, ratio_low, ratio_high = summary(paired)
        per_mb_big = summary(times["ours"])[0] / mb_big
        per_mb_small = summary(small_times)[0] / mb_small
        linear = per_mb_big / per_mb_small
        fast_ok, linear_ok = ratio >= 2.0, linear <= 2.0
        ok = ok and fast_ok and linear_ok
        print(
            f"  speed-up over httpx-sse: {ratio:.2f}x ({ratio_low:.2f}–{ratio_high:.2f}) "
            f"(budget ≥ 2x) {verdict(fast_ok)}; over openai: "
            f"{summary(paired_openai)[0]:.1f}x"
        )
        print(
            f"  linearity: {per_mb_big * 1000:.2f} ms/MB at 20 MB vs "
            f"{per_mb_small * 1000:.2f} ms/MB at 2 MB = {linear:.2f}x (budget ≤ 2x) "
            f"{verdict(linear_ok)}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
