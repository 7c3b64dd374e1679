"""Several pictures and recalls end to end: `serve` + OneBot v11 client + the fake upstream."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .fakes.llm_server import FakeLlm
from .fakes.openai_server import FakeOpenAI, make_png
from .onebot_client import OneBotClient, ServeProcess, message_segments, message_text
from .test_chat_e2e import ACK, quoted_id, write_config


@pytest.fixture
async def upstream():
    async with FakeOpenAI() as fake:
        fake.image = make_png(96, 96, (30, 160, 90))
        fake.honours_n = True
        yield fake


async def test_four_pictures_in_one_message_then_ack_recalled(tmp_path: Path, upstream):
    """ "画4张猫" → ack, one message with four pictures quoting the request, ack withdrawn."""
    server = ServeProcess(tmp_path)
    write_config(server, upstream)
    await server.start()
    try:
        async with OneBotClient(server.ws_url) as client:
            request_id = await client.group_message("画4张猫")
            ack = await client.next_call("send_msg")
            assert message_text(ack.params["message"]) == ACK
            done = await client.next_call("send_msg")
            assert quoted_id(done) == request_id
            assert len(message_segments(done.params["message"], "image")) == 4
            recall = await client.next_call("delete_msg")
            assert recall.params["message_id"] == ack.result["message_id"]
            assert [r.json["n"] for r in upstream.requests] == [4]
    finally:
        await server.stop()


async def test_forward_nodes_from_the_bot(tmp_path: Path, upstream):
    """`multi_image = "forward"`: one send_group_forward_msg, a node per picture, not quoted."""
    server = ServeProcess(tmp_path)
    write_config(server, upstream, plugin={"multi_image": "forward", "ack_message": ""})
    await server.start()
    try:
        async with OneBotClient(server.ws_url) as client:
            await client.group_message("画两张猫")
            forward = await client.next_call("send_group_forward_msg")
            assert forward.params["group_id"] == 777
            nodes = forward.params["messages"]
            assert [node["type"] for node in nodes] == ["node", "node"]
            for node in nodes:
                assert str(node["data"]["user_id"]) == str(client.self_id)
                assert node["data"]["nickname"] == "小画"
                assert len(message_segments(node["data"]["content"], "image")) == 1
                assert message_segments(node["data"]["content"], "reply") == []
    finally:
        await server.stop()


async def test_timed_recall_withdraws_the_picture(tmp_path: Path, upstream):
    """`recall_after = 1`: the picture's message is withdrawn about a second after sending."""
    server = ServeProcess(tmp_path)
    write_config(server, upstream, plugin={"recall_after": 1, "recall_ack": False})
    await server.start()
    try:
        async with OneBotClient(server.ws_url) as client:
            await client.group_message("画一只猫")
            await client.next_call("send_msg")  # the ack
            picture = await client.next_call("send_msg")
            sent = time.monotonic()
            recall = await client.next_call("delete_msg")
            assert time.monotonic() - sent >= 0.8
            assert recall.params["message_id"] == picture.result["message_id"]
    finally:
        await server.stop()


async def test_again_end_to_end(tmp_path: Path, upstream):
    """ "再来一张" draws with no LLM call; "再来一张，但是要夜景" shows the LLM the last prompt."""
    async with FakeLlm('{"prompt": "a cat at night", "style": "real"}') as llm:
        server = ServeProcess(tmp_path)
        write_config(
            server,
            upstream,
            plugin={"ack_message": ""},
            llm={"base_url": llm.base_url, "model": "test-model"},
        )
        await server.start()
        try:
            async with OneBotClient(server.ws_url) as client:
                for text in ("画一只猫", "再来一张", "再来一张，但是要夜景"):
                    await client.group_message(text)
                    await client.next_call("send_msg")
        finally:
            await server.stop()
    assert len(llm.bodies) == 2  # the first request and the amended one
    assert "a cat at night" in json.dumps(llm.bodies[-1], ensure_ascii=False)
    assert [r.json["prompt"] for r in upstream.requests] == ["a cat at night"] * 3
