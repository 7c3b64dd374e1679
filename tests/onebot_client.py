"""A real `serve` process and a small OneBot v11 implementation that talks to it.

``ServeProcess`` starts ``python -m nonebot_plugin_llm2pic serve`` on a free loopback port with
its own config/data dirs. ``OneBotClient`` connects to its reverse WebSocket the way NapCat or
LLOneBot do, posts message events and answers the bot's API calls (recording each one).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from typing_extensions import Self

SELF_ID = 2000
STARTUP_TIMEOUT = 30.0
CALL_TIMEOUT = 20.0
BACKGROUND_LOOKUPS = frozenset({"get_friend_list"})
"""Calls the bot makes on its own (the config watcher looks up which superusers are friends)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServeProcess:
    """``python -m nonebot_plugin_llm2pic serve`` in a subprocess, rooted in ``workdir``."""

    workdir: Path
    superusers: tuple[str, ...] = ("10000",)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "llm2pic.toml"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/onebot/v11/ws"

    @property
    def log_path(self) -> Path:
        return self.workdir / "serve.log"

    async def start(self) -> None:
        """Start the process and wait until its port accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LOCALSTORE_USE_CWD": "true",
            "SUPERUSERS": json.dumps(list(self.superusers)),
            "COMMAND_START": '["/"]',
            "NICKNAME": '["小画"]',
            **self.env,
        }
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nonebot_plugin_llm2pic",
            "serve",
            "--port",
            str(self.port),
            "--config",
            str(self.config_path),
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(f"serve exited {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"serve did not listen within {STARTUP_TIMEOUT}s:\n{self.log()}")

    async def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL) and wait for it."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()

    def log(self) -> str:
        """What the process printed so far (for failure messages)."""
        return self.log_path.read_text("utf-8", errors="replace")[-4000:]


@dataclass(frozen=True)
class ApiCall:
    """One action the bot asked the OneBot implementation to perform."""

    action: str
    params: dict[str, Any]


def message_text(message: Any) -> str:
    """Plain text of an outgoing message (array or CQ string form)."""
    if isinstance(message, str):
        return message
    return "".join(seg["data"].get("text", "") for seg in message if seg["type"] == "text")


def message_segments(message: Any, kind: str) -> list[dict[str, Any]]:
    """The data of every segment of one type in an outgoing message."""
    if isinstance(message, str):
        return []
    return [seg["data"] for seg in message if seg["type"] == kind]


class OneBotClient:
    """A OneBot v11 implementation over a reverse WebSocket, for end-to-end tests."""

    def __init__(self, url: str, *, self_id: int = SELF_ID, access_token: str = "") -> None:
        self.url = url
        self.self_id = self_id
        self.access_token = access_token
        self.calls: asyncio.Queue[ApiCall] = asyncio.Queue()
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self._message_ids = itertools.count(1)
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        headers = {"X-Self-ID": str(self.self_id), "X-Client-Role": "Universal"}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        self._ws = await websockets.connect(
            self.url, additional_headers=headers, max_size=None, compression=None
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader:
            self._reader.cancel()
        await self._ws.close()

    def next_message_id(self) -> int:
        return next(self._message_ids)

    async def _read(self) -> None:
        async for raw in self._ws:
            frame = json.loads(raw)
            if "action" not in frame:
                continue
            call = ApiCall(frame["action"], frame.get("params") or {})
            await self.calls.put(call)
            handler = self.handlers.get(call.action)
            data = handler(call.params) if handler else {"message_id": self.next_message_id()}
            await self._ws.send(
                json.dumps({"status": "ok", "retcode": 0, "data": data, "echo": frame.get("echo")})
            )

    async def post_event(self, event: dict[str, Any]) -> None:
        """Send one event frame to the bot."""
        await self._ws.send(
            json.dumps({"time": int(time.time()), "self_id": self.self_id, **event})
        )

    async def group_message(
        self,
        message: str | list[dict[str, Any]],
        *,
        user_id: int = 12345,
        group_id: int = 777,
        role: str = "member",
        message_id: int | None = None,
    ) -> int:
        """Post a group message (text or segment list); returns its message_id."""
        segments = (
            [{"type": "text", "data": {"text": message}}] if isinstance(message, str) else message
        )
        message_id = message_id or self.next_message_id()
        await self.post_event(
            {
                "post_type": "message",
                "message_type": "group",
                "sub_type": "normal",
                "message_id": message_id,
                "group_id": group_id,
                "user_id": user_id,
                "anonymous": None,
                "message": segments,
                "raw_message": message_text(segments),
                "font": 0,
                "sender": {"user_id": user_id, "nickname": f"u{user_id}", "card": "", "role": role},
            }
        )
        return message_id

    async def private_message(self, text: str, *, user_id: int = 12345) -> int:
        """Post a private (friend) message; returns its message_id."""
        message_id = self.next_message_id()
        segments = [{"type": "text", "data": {"text": text}}]
        await self.post_event(
            {
                "post_type": "message",
                "message_type": "private",
                "sub_type": "friend",
                "message_id": message_id,
                "user_id": user_id,
                "message": segments,
                "raw_message": text,
                "font": 0,
                "sender": {"user_id": user_id, "nickname": f"u{user_id}"},
            }
        )
        return message_id

    async def next_call(self, action: str | None = None, timeout: float = CALL_TIMEOUT) -> ApiCall:
        """The next API call (optionally of one action, skipping others), or fail on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {action or 'API'} call within {timeout}s")
            try:
                call = await asyncio.wait_for(self.calls.get(), remaining)
            except asyncio.TimeoutError:
                raise AssertionError(f"no {action or 'API'} call within {timeout}s") from None
            if action is None or call.action == action:
                return call

    async def no_call(self, within: float = 1.0) -> None:
        """Assert the bot makes no API call for a while, lookups in the background aside."""
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                call = await asyncio.wait_for(self.calls.get(), remaining)
            except asyncio.TimeoutError:
                return
            if call.action not in BACKGROUND_LOOKUPS:
                raise AssertionError(f"unexpected call {call.action}: {call.params}")
