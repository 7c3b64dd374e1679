"""The prompt writer against a local fake LLM: what it sends, what it parses, how it falls back."""

# Chat text is Chinese with full-width punctuation on purpose.

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from nonebot_plugin_llm2pic.exceptions import (
    BackendAuthError,
    ContentPolicyError,
    EndpointNotFoundError,
)
from nonebot_plugin_llm2pic.history import HistoryEntry
from nonebot_plugin_llm2pic.prompt_writer import (
    DEFAULT_APPEARANCE,
    SELFIE_INSTRUCTION,
    WrittenPrompt,
    clean_output,
    finalize_prompt,
    judge_intent,
    probe_llm,
    write_prompt,
)
from nonebot_plugin_llm2pic.settings import Settings, parse_settings
from nonebot_plugin_llm2pic.transport import run_probe
from tests.fakes.llm_server import FakeLlm

APPEARANCE = "silver short hair, red eyes, white hoodie"
NOW = time.time()
HISTORY = [
    HistoryEntry("阿明", "周末去海边吧", NOW - 60),
    HistoryEntry("小画", "[图片]", NOW - 50, is_bot=True),
    HistoryEntry("小红", "好啊，我想看日落", NOW - 40),
]


@pytest.fixture
async def llm() -> AsyncIterator[FakeLlm]:
    async with FakeLlm() as fake:
        yield fake


def _settings(base_url: str = "", **llm: Any) -> Settings:
    return parse_settings(
        {
            "persona": {
                "name": "小画",
                "description": "a cheerful painter",
                "appearance": APPEARANCE,
            },
            "llm": {"base_url": base_url, "model": "test-model" if base_url else "", **llm},
            "generation": {"custom_prompt_add": "masterpiece"},
        }
    )


async def _write(
    session: aiohttp.ClientSession,
    settings: Settings,
    request: str = "画一只猫",
    *,
    selfie: bool = False,
    style: str = "natural",
) -> WrittenPrompt:
    return await write_prompt(
        session,
        settings,
        request,
        HISTORY,
        selfie=selfie,
        prompt_style=style,  # type: ignore[arg-type]
    )


def _messages(fake: FakeLlm) -> tuple[str, str]:
    system, user = fake.bodies[-1]["messages"]
    assert (system["role"], user["role"]) == ("system", "user")
    return system["content"], user["content"]


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# --- what the writer sends ----------------------------------------------------------------------


async def test_sends_system_message_history_and_request(session, llm) -> None:
    """The request body has a real system message, the chat as name: text lines, and the request."""
    await _write(session, _settings(llm.base_url))
    system, user = _messages(llm)
    assert "You write prompts for an image generator" in system
    assert "阿明: 周末去海边吧" in user
    assert "小画 (the bot): [图片]" in user
    assert user.index("好啊，我想看日落") < user.index("画一只猫")
    assert llm.bodies[-1]["model"] == "test-model"
    assert llm.bodies[-1]["temperature"] == 0.7
    assert llm.bodies[-1]["stream"] is False


async def test_persona_looks_left_out_of_plain_requests(session, llm) -> None:
    """A request that is not about the bot gets no persona appearance or description."""
    await _write(session, _settings(llm.base_url), "画一只猫")
    system, user = _messages(llm)
    assert APPEARANCE not in system + user
    assert "a cheerful painter" not in system + user
    assert SELFIE_INSTRUCTION not in user


async def test_selfie_sends_persona_and_selfie_mode(session, llm) -> None:
    """A selfie request carries the persona's looks and the selfie instruction."""
    await _write(session, _settings(llm.base_url), "来张自拍", selfie=True)
    system, user = _messages(llm)
    assert APPEARANCE in system
    assert "a cheerful painter" in system
    assert SELFIE_INSTRUCTION in user


@pytest.mark.parametrize("request_text", ["画一张你在海边的样子", "画一张小画在海边的样子"])
async def test_request_about_the_bot_sends_persona(session, llm, request_text: str) -> None:
    """A request about "你" or the bot's name carries the persona's looks too."""
    await _write(session, _settings(llm.base_url), request_text)
    system, _ = _messages(llm)
    assert APPEARANCE in system


async def test_request_not_repeated_from_history(session, llm) -> None:
    """When the request is also the newest chat line, it appears once, as the request."""
    history = [*HISTORY, HistoryEntry("小红", "画一只猫", NOW)]
    await write_prompt(
        session, _settings(llm.base_url), "画一只猫", history, selfie=False, prompt_style="natural"
    )
    _, user = _messages(llm)
    assert user.count("画一只猫") == 1


@pytest.mark.parametrize(
    ("style", "marker"),
    [("natural", "plain English sentences"), ("tags", "Comma-separated English tags")],
)
async def test_prompt_style_changes_format(session, llm, style: str, marker: str) -> None:
    """prompt_style picks natural sentences or ordered tags in the system prompt."""
    await _write(session, _settings(llm.base_url), style=style)
    system, _ = _messages(llm)
    assert marker in system


async def test_custom_system_prompt_substitutes_persona_with_braces(session, llm) -> None:
    """llm.system_prompt replaces the built-in one; {persona} is filled despite braces in text."""
    settings = parse_settings(
        {
            "persona": {
                "name": "小画",
                "description": "likes {curly} braces {0}",
                "appearance": "x",
            },
            "llm": {
                "base_url": llm.base_url,
                "model": "m",
                "system_prompt": 'You are {persona}. Answer {"prompt": "..."} {unknown}',
            },
        }
    )
    result = await _write(session, settings, "来张自拍", selfie=True)
    system, _ = _messages(llm)
    assert system.startswith("You are Name: 小画")
    assert "likes {curly} braces {0}" in system
    assert system.endswith('Answer {"prompt": "..."} {unknown}')
    assert result.source == "llm"


async def test_api_key_from_env_sent_as_bearer(session, llm, monkeypatch) -> None:
    """An env:NAME key is resolved and sent as a Bearer token."""
    monkeypatch.setenv("LLM2PIC_TEST_LLM_KEY", "sk-test-key-123")
    await _write(session, _settings(llm.base_url, api_key="env:LLM2PIC_TEST_LLM_KEY"))
    assert llm.headers[-1]["Authorization"] == "Bearer sk-test-key-123"


async def test_no_key_sends_no_authorization(session, llm) -> None:
    """Keyless local LLMs get no Authorization header at all."""
    await _write(session, _settings(llm.base_url))
    assert "Authorization" not in llm.headers[-1]


async def test_full_chat_url_as_base_url(session, llm) -> None:
    """A base_url pasted with /chat/completions still reaches the right endpoint."""
    result = await _write(session, _settings(f"{llm.base_url}/chat/completions"))
    assert result.source == "llm"
    assert llm.paths == ["/v1/chat/completions"]


# --- answers ------------------------------------------------------------------------------------


async def test_json_answer(session, llm) -> None:
    """A non-streamed JSON answer becomes the prompt and style."""
    llm.answer = '{"prompt": "a fluffy cat on a sofa", "style": "real"}'
    result = await _write(session, _settings(llm.base_url))
    assert result == WrittenPrompt("a fluffy cat on a sofa", "real", "llm")


async def test_streamed_answer_is_accumulated(session, llm) -> None:
    """With stream = true the deltas are joined and parsed once at the end."""
    llm.answer = (
        '<think>the user wants a cat</think>{"prompt": "a cat in the rain", "style": "anime"}'
    )
    result = await _write(session, _settings(llm.base_url, stream=True))
    assert llm.bodies[-1]["stream"] is True
    assert result == WrittenPrompt("a cat in the rain", "anime", "llm")


async def test_stream_asked_but_json_answered(session, llm) -> None:
    """A relay that ignores stream = true and answers JSON is still understood."""
    llm.ignore_stream = True
    result = await _write(session, _settings(llm.base_url, stream=True))
    assert result == WrittenPrompt("a cat", "anime", "llm")


# --- fallbacks ----------------------------------------------------------------------------------


async def test_fallback_on_500_after_one_quick_retry(session, llm) -> None:
    """A 5xx is retried once, then the request text is the prompt."""
    llm.status = 500
    result = await _write(session, _settings(llm.base_url), "画一只猫")
    assert result == WrittenPrompt("画一只猫", None, "fallback")
    assert len(llm.bodies) == 2


async def test_no_retry_on_auth_error(session, llm) -> None:
    """A 401 falls back at once: retrying cannot fix a key."""
    llm.status = 401
    result = await _write(session, _settings(llm.base_url))
    assert result.source == "fallback"
    assert len(llm.bodies) == 1


async def test_fallback_on_timeout(session, llm) -> None:
    """An LLM slower than llm.timeout is abandoned in time and the request text is used."""
    llm.delay = 2.0
    started = time.monotonic()
    result = await _write(session, _settings(llm.base_url, timeout=0.5), "画一只猫")
    assert time.monotonic() - started < 1.5
    assert result == WrittenPrompt("画一只猫", None, "fallback")


async def test_fallback_on_connection_refused(session) -> None:
    """A closed port falls back to the request text."""
    result = await _write(session, _settings(_closed_port_url()), "画一只猫")
    assert result == WrittenPrompt("画一只猫", None, "fallback")


async def test_fallback_on_empty_answer(session, llm) -> None:
    """An answer with nothing usable (only reasoning) falls back."""
    llm.answer = "<think>hmm, what should I draw"
    result = await _write(session, _settings(llm.base_url), "画一只猫")
    assert result == WrittenPrompt("画一只猫", None, "fallback")


async def test_fallback_on_in_band_stream_error(session, llm) -> None:
    """An error chunk in the middle of a stream falls back instead of using half an answer."""
    llm.stream_error = "The server had an error while processing your request."
    result = await _write(session, _settings(llm.base_url, stream=True))
    assert result.source == "fallback"


async def test_not_configured_makes_no_request(session, llm) -> None:
    """Without [llm] model the request text is the prompt and nothing is sent."""
    settings = parse_settings({"llm": {"base_url": llm.base_url}})
    result = await _write(session, settings, "画一只猫")
    assert result == WrittenPrompt("画一只猫", None, "fallback")
    assert llm.bodies == []


async def test_selfie_without_llm_uses_appearance(session) -> None:
    """A selfie without an LLM is drawn from persona.appearance, never from "来张自拍"."""
    result = await _write(session, _settings(), "来张自拍", selfie=True)
    assert result.source == "fallback"
    assert APPEARANCE in result.prompt
    assert "selfie" in result.prompt
    assert "来张自拍" not in result.prompt


async def test_selfie_without_appearance_uses_neutral_default(session) -> None:
    """An empty persona.appearance gives a neutral default description."""
    result = await _write(session, Settings(), "来张自拍", selfie=True)
    assert DEFAULT_APPEARANCE in result.prompt


async def test_selfie_on_llm_failure_uses_appearance(session, llm) -> None:
    """When the LLM fails on a selfie, the fallback is the appearance template too."""
    llm.status = 503
    result = await _write(session, _settings(llm.base_url), "来张自拍", selfie=True)
    assert result.source == "fallback"
    assert APPEARANCE in result.prompt


async def test_fallback_log_has_reason_but_no_key(session, llm, caplog) -> None:
    """The fallback is logged with its reason; the API key never appears in the log."""
    key = "sk-secretsecret-4242"
    llm.status = 401
    llm.error_body = f'{{"error": {{"message": "Incorrect API key provided: {key}"}}}}'
    with caplog.at_level(logging.INFO, logger="nonebot_plugin_llm2pic"):
        await _write(session, _settings(llm.base_url, api_key=key))
    assert "401" in caplog.text
    assert key not in caplog.text


# --- output cleaning ----------------------------------------------------------------------------

CLEAN_CASES = [
    ('{"prompt": "a cat", "style": "anime"}', "a cat", "anime"),
    ('{"prompt": "a cat", "style": "REAL"}', "a cat", "real"),
    ('{"prompt": "a cat", "style": "watercolor"}', "a cat", None),
    ('{"Prompt": "a cat"}', "a cat", None),
    ('```json\n{"prompt": "a cat", "style": "anime"}\n```', "a cat", "anime"),
    ("```\na cat on a roof\n```", "a cat on a roof", None),
    (
        '<think>\nThe user wants a cat.\n</think>\n{"prompt": "a cat", "style": "real"}',
        "a cat",
        "real",
    ),
    ('Reasoning here.</think>{"prompt": "a cat"}', "a cat", None),
    ('<think>still thinking {"prompt": "a dog", "style": "anime"}', "a dog", "anime"),
    ("<think>never finished", "", None),
    ('Sure! Here it is: {"prompt": "a cat", "style": "anime"} Enjoy!', "a cat", "anime"),
    ('{{"prompt": "a cat", "style": "anime"}}', "a cat", "anime"),
    ('"a cat sitting on a windowsill"', "a cat sitting on a windowsill", None),
    ("\u201ca cat\u201d", "a cat", None),
    ("Prompt: a cat, sunset", "a cat, sunset", None),
    ("**Prompt:** a cat", "a cat", None),
    ("提示词：一只猫", "一只猫", None),
    (
        "Here is your prompt:\n\na cat under the stars\nStyle: anime",
        "a cat under the stars",
        "anime",
    ),
    ("1girl, solo,\nsilver hair", "1girl, solo, silver hair", None),
    ('{"prompt": "  \\"a cat\\"  "}', "a cat", None),
    ('{"prompt": ""}', "", None),
    ("", "", None),
    ("   ", "", None),
]


@pytest.mark.parametrize(("raw", "prompt", "style"), CLEAN_CASES)
def test_clean_output(raw: str, prompt: str, style: str | None) -> None:
    """LLM answers in every usual shape are reduced to the prompt and style."""
    assert clean_output(raw) == (prompt, style)


# --- finalize -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "add", "expected"),
    [
        ("1girl, solo", "masterpiece, best quality", "1girl, solo, masterpiece, best quality"),
        ("1girl, Masterpiece, solo", "masterpiece", "1girl, Masterpiece, solo"),
        ("a cat,, a cat ,  sunset", "", "a cat, sunset"),
        ("一只猫，夕阳", "高清", "一只猫, 夕阳, 高清"),
        ("a cat", "", "a cat"),
        ("", "best quality", "best quality"),
    ],
)
def test_finalize_prompt_dedupes_in_order(prompt: str, add: str, expected: str) -> None:
    """Pieces are trimmed, de-duplicated case-insensitively and keep their first order."""
    assert finalize_prompt(prompt, add) == expected


def test_finalize_prompt_cuts_at_comma() -> None:
    """Over the cap, the prompt is cut at the last comma that fits."""
    assert finalize_prompt("aaaa, bbbb, cccc", "", max_length=12) == "aaaa, bbbb"


def test_finalize_prompt_hard_cut_without_comma() -> None:
    """A single over-long piece is cut hard at the cap."""
    assert finalize_prompt("a" * 50, "", max_length=10) == "a" * 10


# --- judge and probe ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("yes", True),
        ("Yes.", True),
        ("<think>maybe</think>YES", True),
        ("no", False),
        ("不是", False),
    ],
)
async def test_judge_intent(session, llm, answer: str, verdict: bool) -> None:
    """The judge's yes/no answer decides; the message and chat are sent."""
    llm.answer = answer
    assert await judge_intent(session, _settings(llm.base_url), "想看看樱花", HISTORY) is verdict
    system, user = _messages(llm)
    assert "小画" in system
    assert "想看看樱花" in user
    assert "阿明: 周末去海边吧" in user


async def test_judge_intent_false_on_failure(session, llm) -> None:
    """When the LLM fails, the judge says no (don't fire on doubt)."""
    llm.status = 500
    assert await judge_intent(session, _settings(llm.base_url), "想看看樱花", HISTORY) is False


async def test_judge_intent_false_without_llm(session) -> None:
    """Without an LLM there is nobody to confirm: no."""
    assert await judge_intent(session, _settings(), "想看看樱花", HISTORY) is False


async def test_probe_lists_model(session, llm) -> None:
    """probe_llm reports reachability and whether the model is listed."""
    result = await probe_llm(session, _settings(llm.base_url))
    assert result.ok
    assert "reachable" in result.detail
    assert "test-model listed" in result.detail
    assert llm.paths == ["/v1/models"]
    assert llm.bodies == []


async def test_probe_raises_on_auth_error(session, llm) -> None:
    """A rejected key is a typed error for `check`, named as the LLM."""
    llm.api_key = "sk-right-key-0000"
    with pytest.raises(BackendAuthError) as caught:
        await probe_llm(session, _settings(llm.base_url, api_key="sk-wrong-key-0000"))
    assert caught.value.user_message == "提示词模型（LLM）认证失败"


async def test_probe_without_models_route_sends_an_empty_chat(session, llm) -> None:
    """Without /models an empty chat is sent: its 400 proves reach and auth; nothing is written."""
    llm.has_models = False
    result = await probe_llm(session, _settings(llm.base_url))
    assert result.ok
    assert "HTTP 400" in result.detail
    assert llm.paths == ["/v1/models", "/v1/chat/completions"]
    assert llm.bodies == [{"model": "test-model", "messages": []}]


async def test_probe_without_models_route_still_catches_a_bad_key(session, llm) -> None:
    """Without /models the empty chat's 401 still says the key is wrong."""
    llm.has_models = False
    llm.api_key = "sk-right-key-0000"
    with pytest.raises(BackendAuthError):
        await probe_llm(session, _settings(llm.base_url, api_key="sk-wrong-key-0000"))


async def test_probe_base_url_without_api_prefix(session, llm) -> None:
    """A base_url missing /v1 is named as such (and as the LLM), not a bare HTTP 404."""
    with pytest.raises(EndpointNotFoundError) as caught:
        await probe_llm(session, _settings(llm.url("")))
    assert caught.value.user_message.startswith("提示词模型（LLM）")
    assert "/v1" in caught.value.user_message
    assert "绘图服务" not in caught.value.user_message


async def test_probe_result_prints_as_its_detail(session, llm) -> None:
    """A probe result formats as its detail line, so `check` can print it as it is."""
    result = await probe_llm(session, _settings(llm.base_url))
    assert f"{result}" == result.detail


async def test_run_probe_turns_a_failure_into_a_row(session, llm) -> None:
    """run_probe gives ok=False with the Chinese reason and the admin detail, keeping the error."""
    result = await run_probe(lambda: probe_llm(session, _settings(llm.url(""))))
    assert not result.ok
    assert isinstance(result.error, EndpointNotFoundError)
    assert result.detail.startswith("提示词模型（LLM）找不到 API 接口")
    assert "HTTP 404" in result.detail


async def test_probe_not_configured_is_not_an_error(session) -> None:
    """An unconfigured LLM is reported, not raised: the request text is the prompt then."""
    result = await probe_llm(session, _settings())
    assert result.ok
    assert "not configured" in result.detail


# --- refusals and errors --------------------------------------------------------------------------

REFUSAL = {
    "message": "Your request was rejected as a result of our safety system.",
    "type": "invalid_request_error",
    "code": "content_policy_violation",
}


@pytest.mark.parametrize("how", ["http-400", "in-band", "finish-content-filter"])
@pytest.mark.parametrize("stream", [False, True])
async def test_content_policy_refusal_refuses_the_job(session, llm, how: str, stream: bool):
    """A content-policy refusal from the writer is raised, never replaced by the request text."""
    if how == "http-400":
        llm.status = 400
        llm.error_body = json.dumps({"error": REFUSAL})
    elif how == "in-band":
        llm.answer_error = REFUSAL
        llm.stream_error = REFUSAL["message"]
    else:
        llm.finish_reason = "content_filter"
    with pytest.raises(ContentPolicyError) as caught:
        await _write(session, _settings(llm.base_url, stream=stream))
    assert caught.value.user_message == "提示词模型（LLM）拒绝了这个请求（内容审核未通过）"
    assert len(llm.bodies) == 1  # not retried


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, {"message": "Rate limit reached for requests", "code": "rate_limit_exceeded"}),
        (402, {"message": "Insufficient Balance", "type": "unknown_error"}),
        (404, {"message": "The model `x` does not exist", "code": "model_not_found"}),
    ],
    ids=["rate-limit", "balance", "model"],
)
async def test_other_known_failures_still_fall_back(session, llm, status: int, error: Any):
    """Quota, balance, rate-limit and unknown-model answers fall back to the request text."""
    llm.status = status
    llm.error_body = json.dumps({"error": error})
    written = await _write(session, _settings(llm.base_url))
    assert written == WrittenPrompt("画一只猫", None, "fallback")


async def test_in_band_json_error_falls_back(session, llm) -> None:
    """An {"error": …} body inside a 200 answer is an error (fallback), not an empty prompt."""
    llm.answer_error = {"message": "upstream provider failed", "type": "server_error"}
    written = await _write(session, _settings(llm.base_url))
    assert written.source == "fallback"
