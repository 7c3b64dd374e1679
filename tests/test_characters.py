"""Characters, the pure parts: whose avatar a request means, avatar fetching, persona images."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from nonebot_plugin_llm2pic import avatars
from nonebot_plugin_llm2pic.avatars import (
    AVATAR_FAILED_REPLY,
    NO_AVATAR_REPLY,
    Avatar,
    AvatarMissingError,
    avatar_for,
    fetch_avatar,
    mentioned_members,
    own_avatar,
    smaller_url,
)
from nonebot_plugin_llm2pic.backends import ReferenceImage
from nonebot_plugin_llm2pic.exceptions import Llm2PicError, ReferenceImageError, SettingsError
from nonebot_plugin_llm2pic.persona_refs import PersonaLooks, inspect, load_persona_images
from nonebot_plugin_llm2pic.prompt_writer import describe_look
from nonebot_plugin_llm2pic.settings import parse_settings
from nonebot_plugin_llm2pic.transport import RequestOptions

from .fakes import LoopbackServer
from .fakes.vision_llm import FakeVisionLlm


def png(colour: tuple[int, int, int] = (220, 30, 30), size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


PLACEHOLDER = png((128, 128, 128), 40)
"""Stands in for QQ's default avatar: tests mark its md5 as the placeholder's."""


# --- whose avatar -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("把我画成猫娘", "explicit"),
        ("把我变成二次元", "explicit"),
        ("我的动漫形象", "explicit"),
        ("想看我的Q版头像", "explicit"),
        ("我的二次元样子是什么样", "explicit"),
        ("二次元的我", "weak"),
        ("画一下我的头像", "subject"),
        ("帮我画一只猫", None),
        ("给我画个头像", None),
        ("我想看二次元美少女", None),
        ("把我家猫画成动漫风", None),
        ("我喜欢的动漫形象是初音", None),
        ("把123456画成动漫风", None),
        ("二次元的我们", None),
    ],
)
def test_own_avatar(text: str, expected: str | None) -> None:
    """The sender's own avatar is meant by 把我画成/我的…形象/二次元的我, never by 帮我/我家/…."""
    assert own_avatar(text) == expected


def at(qq: str) -> tuple[str, dict[str, str]]:
    return ("at", {"qq": qq})


def text(value: str) -> tuple[str, dict[str, str]]:
    return ("text", {"text": value})


REPLY = ("reply", {"id": "77"})


def test_members_named_by_at_segments() -> None:
    """Every @member is a subject, in order and once; the bot and @全体成员 are not."""
    segments = [at("1"), text("把"), at("222"), text("和"), at("all"), at("333"), at("222")]
    assert mentioned_members(segments, self_id="1", quoted_sender=None) == ["222", "333"]


def test_automatic_at_after_reply_is_not_a_subject() -> None:
    """The @ QQ adds after a reply, naming the quoted sender, is not a subject."""
    segments = [REPLY, at("222"), text(" 画成动漫风")]
    assert mentioned_members(segments, self_id="1", quoted_sender="222") == []


def test_automatic_at_when_quoted_sender_unknown() -> None:
    """With the quoted message unreadable, the @ right after the reply is taken as QQ's own."""
    segments = [REPLY, text(" "), at("222"), text("画成动漫风")]
    assert mentioned_members(segments, self_id="1", quoted_sender=None) == []


def test_at_after_reply_naming_someone_else_is_a_subject() -> None:
    """An @ after a reply that names another member than the quoted sender counts."""
    segments = [REPLY, at("333"), text("画成动漫风")]
    assert mentioned_members(segments, self_id="1", quoted_sender="222") == ["333"]


def test_at_later_in_a_reply_is_a_subject() -> None:
    """Only the @ right after the reply is QQ's; a later one is the user's."""
    segments = [REPLY, at("222"), text(" 把"), at("222"), text("画成动漫风")]
    assert mentioned_members(segments, self_id="1", quoted_sender="222") == ["222"]


def test_avatar_url_filled_and_small() -> None:
    """{user_id} is filled; the retry asks for s=100, and a URL without a size has no retry."""
    avatar = avatar_for("https://q1.qlogo.cn/g?b=qq&nk={user_id}&s=640", "12345")
    assert avatar.url == "https://q1.qlogo.cn/g?b=qq&nk=12345&s=640"
    assert smaller_url(avatar.url) == "https://q1.qlogo.cn/g?b=qq&nk=12345&s=100"
    assert smaller_url("http://127.0.0.1/avatar/12345.png") is None


# --- fetching -----------------------------------------------------------------------------------


class AvatarServer(LoopbackServer):
    """Avatars by ``nk`` and ``s``: ``images[(nk, s)]``; anything else 404."""

    def __init__(self) -> None:
        self.images: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/g", self._avatar)

    async def _avatar(self, request: web.Request) -> web.Response:
        key = (request.query.get("nk", ""), request.query.get("s", ""))
        self.requests.append(key)
        if key not in self.images:
            return web.Response(status=404)
        return web.Response(body=self.images[key], content_type="image/png")


@pytest.fixture
async def server() -> AsyncIterator[AvatarServer]:
    async with AvatarServer() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    """PLACEHOLDER counts as QQ's default avatar."""
    monkeypatch.setattr(avatars, "PLACEHOLDER_MD5", {hashlib.md5(PLACEHOLDER).hexdigest()})


OPTIONS = RequestOptions(backend="头像", timeout=5, read_timeout=5)


def avatar_at(server: AvatarServer, user_id: str) -> Avatar:
    return avatar_for(server.url("/g") + "?b=qq&nk={user_id}&s=640", user_id)


async def test_fetch_avatar(server: AvatarServer, session: aiohttp.ClientSession) -> None:
    """An avatar is fetched once and becomes a reference image."""
    server.images[("5", "640")] = png()
    image = await fetch_avatar(session, avatar_at(server, "5"), OPTIONS)
    assert image == ReferenceImage(data=png(), mime="image/png")
    assert server.requests == [("5", "640")]


@pytest.mark.usefixtures("placeholder")
async def test_placeholder_retried_small(
    server: AvatarServer, session: aiohttp.ClientSession
) -> None:
    """The large placeholder is retried at s=100, whose real avatar is used."""
    server.images[("5", "640")] = PLACEHOLDER
    server.images[("5", "100")] = png((30, 60, 220))
    image = await fetch_avatar(session, avatar_at(server, "5"), OPTIONS)
    assert image.data == png((30, 60, 220))
    assert server.requests == [("5", "640"), ("5", "100")]


@pytest.mark.usefixtures("placeholder")
async def test_placeholder_twice_means_no_avatar(
    server: AvatarServer, session: aiohttp.ClientSession
) -> None:
    """A placeholder at both sizes is answered 「TA 没有设置头像」."""
    server.images[("5", "640")] = server.images[("5", "100")] = PLACEHOLDER
    with pytest.raises(AvatarMissingError) as caught:
        await fetch_avatar(session, avatar_at(server, "5"), OPTIONS)
    assert caught.value.user_message == NO_AVATAR_REPLY


async def test_avatar_fetch_failure(server: AvatarServer, session: aiohttp.ClientSession) -> None:
    """A failed download gets its own clear reply."""
    with pytest.raises(ReferenceImageError) as caught:
        await fetch_avatar(session, avatar_at(server, "404"), OPTIONS)
    assert caught.value.user_message == AVATAR_FAILED_REPLY


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["q1.qlogo.cn/g?nk={user_id}", "https://q1.qlogo.cn/g?b=qq&s=640", "ftp://x/{user_id}"]
)
def test_avatar_url_validated(url: str) -> None:
    """plugin.avatar_url needs http(s) and {user_id}."""
    with pytest.raises(SettingsError) as caught:
        parse_settings({"plugin": {"avatar_url": url}})
    assert caught.value.key == "plugin.avatar_url"


def test_avatar_subjects_closed_set() -> None:
    """plugin.avatar_subjects is self, members or off."""
    assert parse_settings({"plugin": {"avatar_subjects": "members"}}).plugin.avatar_subjects
    with pytest.raises(SettingsError):
        parse_settings({"plugin": {"avatar_subjects": "everyone"}})


def test_routing_selfie_must_name_a_backend() -> None:
    """routing.selfie names an enabled backend, like the other routing keys."""
    assert parse_settings({"routing": {"selfie": "openai"}}).routing.selfie == "openai"
    with pytest.raises(SettingsError) as caught:
        parse_settings({"routing": {"selfie": "nope"}})
    assert caught.value.key == "routing.selfie"


def roots(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "config", tmp_path / "data"


@pytest.mark.parametrize(
    "entry", ["persona/me.png", "https://example.com/me.png", "DATA/me.png", "./me.png"]
)
def test_reference_images_accepted(tmp_path: Path, entry: str) -> None:
    """Files inside the config folder or the data dir, and http(s) URLs, are accepted."""
    entry = entry.replace("DATA", str(tmp_path / "data"))
    settings = parse_settings({"persona": {"reference_images": [entry]}}, roots(tmp_path))
    assert settings.persona.reference_images == [entry]


@pytest.mark.parametrize(
    "entry", ["../me.png", "/etc/passwd", "file:///etc/passwd", "ftp://x/me.png", ""]
)
def test_reference_images_rejected(tmp_path: Path, entry: str) -> None:
    """Paths leaving the config folder and data dir, and other URL schemes, are rejected."""
    with pytest.raises(SettingsError) as caught:
        parse_settings({"persona": {"reference_images": [entry]}}, roots(tmp_path))
    assert caught.value.key == "persona.reference_images"


# --- persona images -----------------------------------------------------------------------------


def test_inspect_lists_files_and_urls(tmp_path: Path) -> None:
    """`check` sees each entry's file and size, and which cannot be used."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "me.png").write_bytes(png())
    (tmp_path / "config" / "notes.txt").write_text("hi")
    found = inspect(["me.png", "gone.png", "notes.txt", "https://x/me.png"], roots(tmp_path))
    assert [(item.size, item.problem) for item in found] == [
        (len(png()), ""),
        (None, "找不到文件"),
        (2, "不是图片"),
        (None, ""),
    ]


async def test_load_skips_unusable_entries(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    """Missing files and non-images are skipped, never an error."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "me.png").write_bytes(png())
    (tmp_path / "config" / "notes.txt").write_text("hi")
    images = await load_persona_images(
        session, ["gone.png", "notes.txt", "me.png", "../x.png"], roots(tmp_path)
    )
    assert images == (ReferenceImage(data=png(), mime="image/png"),)


async def test_looks_described_once_and_persisted(tmp_path: Path) -> None:
    """A set of images is described once; a new instance reads the description from disk."""
    calls: list[int] = []

    async def ask(images: tuple[ReferenceImage, ...]) -> str:
        calls.append(len(images))
        return "silver hair,  red eyes"

    images = (ReferenceImage(png(), "image/png"),)
    looks = PersonaLooks(tmp_path / "looks.json")
    assert await looks.describe(images, ask) == "silver hair, red eyes"
    assert await looks.describe(images, ask) == "silver hair, red eyes"
    assert await PersonaLooks(tmp_path / "looks.json").describe(images, ask) == (
        "silver hair, red eyes"
    )
    assert calls == [1]
    assert list(json.loads((tmp_path / "looks.json").read_text("utf-8")).values()) == [
        "silver hair, red eyes"
    ]


async def test_looks_failure_not_retried(tmp_path: Path) -> None:
    """A description that failed gives "" and is not asked again until restart."""
    calls: list[int] = []

    async def ask(images: tuple[ReferenceImage, ...]) -> str:
        calls.append(1)
        raise Llm2PicError("text-only model")

    images = (ReferenceImage(png(), "image/png"),)
    looks = PersonaLooks(tmp_path / "looks.json")
    assert await looks.describe(images, ask) == ""
    assert await looks.describe(images, ask) == ""
    assert calls == [1]


async def test_describe_look_sends_labelled_images(session: aiohttp.ClientSession) -> None:
    """The vision LLM gets each persona image, labelled, and its answer is the look."""
    async with FakeVisionLlm() as llm:
        settings = parse_settings({"llm": {"base_url": llm.base_url, "model": "vision-model"}})
        images = [ReferenceImage(png((220, 30, 30)), "image/png")]
        images.append(ReferenceImage(png((30, 60, 220)), "image/png"))
        look = await describe_look(session, settings, images)
    assert look == "a red picture, a blue picture"
    assert llm.violations == []
    assert [image.label for image in llm.calls[0].images] == ["参考图 1", "参考图 2"]


def test_store_checks_reference_paths(tmp_path: Path) -> None:
    """Edits through the store resolve entries against the config folder and the data dir."""
    from nonebot_plugin_llm2pic.settings_store import SettingsStore

    config, data = roots(tmp_path)
    config.mkdir()
    store = SettingsStore(config / "llm2pic.toml", data_dir=data)
    store.load()
    before = store.path.read_bytes()
    with pytest.raises(SettingsError):
        store.set("persona.reference_images", '["../elsewhere/me.png"]')
    assert store.path.read_bytes() == before
    inside = str(data / "persona" / "me.png")
    store.set("persona.reference_images", f'["persona/a.png", "{inside}"]')
    assert store.settings.persona.reference_images == ["persona/a.png", inside]
