"""Seven requests at once with `max_concurrency = 2`, as the operator sent them (issue 10 bug 10):
`serve` + the OneBot client, a fake LLM that writes the later requests' prompts faster, and a
slow fake images upstream."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from aiohttp import web

from .fakes.llm_server import FakeLlm
from .fakes.openai_server import FakeOpenAI
from .onebot_client import OneBotClient, ServeProcess, message_segments, message_text
from .test_chat_e2e import ACK, write_config

REQUESTS = 7
PROMPT_STEP = 0.2
"""The prompt of request N takes (REQUESTS + 1 - N) × this: the last one is written first."""


class StaggeredLlm(FakeLlm):
    """Answers request 第N张 with the prompt "picture N", later requests sooner."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        number = int(re.findall(r"第(\d+)张", json.dumps(body, ensure_ascii=False))[-1])
        await asyncio.sleep((REQUESTS + 1 - number) * PROMPT_STEP)
        answer = json.dumps({"prompt": f"picture {number}", "style": "real"})
        return web.json_response(
            {
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
            }
        )


async def test_seven_requests_get_true_positions_and_slots_in_arrival_order(tmp_path: Path):
    """Acks count the jobs really ahead (前面还有 2…6 个) while prompts are still being written,
    and the backend's slots go to the requests in the order they were accepted."""
    async with FakeOpenAI() as images, StaggeredLlm() as llm:
        images.delay = 0.3
        server = ServeProcess(tmp_path)
        write_config(
            server,
            images,
            llm={"base_url": llm.base_url, "model": "test-model"},
            limits={"user_cooldown_seconds": 0, "max_concurrency": 2},
        )
        await server.start()
        try:
            async with OneBotClient(server.ws_url) as client:
                request_ids = [
                    await client.group_message(f"/pic 第{n}张 猫", user_id=50000 + n)
                    for n in range(1, REQUESTS + 1)
                ]
                calls = [await client.next_call("send_msg") for _ in range(2 * REQUESTS)]
        finally:
            await server.stop()

    acks: dict[int, str] = {}
    pictures: set[int] = set()
    for call in calls:
        [reply] = message_segments(call.params["message"], "reply")
        quoted = int(reply["id"])
        if message_segments(call.params["message"], "image"):
            pictures.add(quoted)
        else:
            acks[quoted] = message_text(call.params["message"])
    assert [acks[i] for i in request_ids] == [ACK, ACK] + [
        f"{ACK}（前面还有 {ahead} 个）" for ahead in range(2, REQUESTS)
    ]
    assert pictures == set(request_ids)
    drawn = [r.json["prompt"] for r in images.requests]
    assert set(drawn[:2]) == {"picture 1", "picture 2"}  # the first two share the two slots
    assert drawn[2:] == [f"picture {n}" for n in range(3, REQUESTS + 1)]
