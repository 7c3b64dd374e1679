"""Avatars as reference images: whose avatar a request means, and fetching it.

Pure of NoneBot: the matcher hands in the message's segments as ``(type, data)`` pairs.

Subjects: the sender, when the request is about themselves (「把我画成…」, 「我的动漫形象」,
「二次元的我」), and with ``plugin.avatar_subjects = "members"`` every ``at`` segment except the
bot, ``@全体成员`` and the @ QQ inserts by itself after a ``reply`` segment (naming the quoted
sender). Numbers typed in the text never name anyone. Words such as 帮我/给我/我想/我家/我喜欢 are
about the sender asking, not about the sender's looks, and match none of the patterns.

Fetching: ``plugin.avatar_url`` with ``{user_id}`` filled. QQ answers a size the user never
uploaded with a default-avatar placeholder; that one is retried at ``s=100``, and a placeholder
again means the member has no avatar (「TA 没有设置头像」).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .backends import ReferenceImage
from .exceptions import BackendError, ReferenceImageError
from .imaging import sniff_mime
from .transport import RequestOptions, download

if TYPE_CHECKING:
    import aiohttp  # imported lazily (transport.py says why)

OwnAvatar = Literal["explicit", "weak", "subject"]
"""How a request points at the sender's own avatar: a request by itself (「把我画成…」), a request
only when addressed to the bot (「二次元的我」), or a subject only inside a drawing request
(「画一下我的头像」)."""

PLACEHOLDER_MD5 = {"acef72340ac0e914090bd35799f5594e"}
"""md5 of QQ's default-avatar placeholder (served at ``s=640`` when that size does not exist)."""
SMALL_SIZE = "100"
"""The avatar size asked for once the large one is a placeholder."""

NO_AVATAR_REPLY = "TA 没有设置头像"
AVATAR_FAILED_REPLY = "头像下载失败，请稍后再试"

_F = re.IGNORECASE
_EXPLICIT = re.compile(r"把我\s*(?:画|变)\s*成|我的\s*(?:二次元|动漫|q版)\s*(?:形象|头像|样子)", _F)
_SUBJECT = re.compile(r"我的\s*(?:形象|头像|样子)")
_WEAK = re.compile(r"二次元的我(?![们家])")

Segments = Sequence[tuple[str, Mapping[str, Any]]]
"""A chat message as ``(segment type, segment data)`` pairs, in order."""


@dataclass(frozen=True)
class Avatar:
    """A member's avatar to fetch as a reference image."""

    user_id: str
    url: str


class AvatarMissingError(ReferenceImageError):
    """The member has no avatar of their own: QQ serves the default placeholder."""

    user_message = NO_AVATAR_REPLY


def own_avatar(text: str) -> OwnAvatar | None:
    """Whether ``text`` is about the sender's own looks, and how strongly (see ``OwnAvatar``)."""
    text = unicodedata.normalize("NFKC", text)
    if _EXPLICIT.search(text):
        return "explicit"
    if _WEAK.search(text):
        return "weak"
    if _SUBJECT.search(text):
        return "subject"
    return None


def mentioned_members(segments: Segments, *, self_id: str, quoted_sender: str | None) -> list[str]:
    """User ids of the ``at`` segments that name a member, in order, without repeats.

    Left out: the bot, ``qq=all``, and the first @ right after a ``reply`` segment when it names
    the quoted sender (or when the quoted message is unknown): QQ adds that one by itself.
    """
    members: list[str] = []
    after_reply = False
    for kind, data in segments:
        if kind == "reply":
            after_reply = True
            continue
        if kind == "text" and not str(data.get("text", "")).strip():
            continue  # QQ puts a space between the automatic @ and what follows
        if kind == "at":
            qq = str(data.get("qq", ""))
            automatic = after_reply and (quoted_sender is None or qq == quoted_sender)
            if qq and qq != "all" and qq != self_id and not automatic and qq not in members:
                members.append(qq)
        after_reply = False
    return members


def avatar_for(template: str, user_id: str) -> Avatar:
    """The avatar of ``user_id`` at ``plugin.avatar_url`` (``{user_id}`` filled)."""
    return Avatar(user_id, template.replace("{user_id}", user_id))


def smaller_url(url: str) -> str | None:
    """``url`` asking for the small size (``s=100``), or None when it names no size."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "s" for key, _ in query):
        return None
    query = [(key, SMALL_SIZE if key == "s" else value) for key, value in query]
    return urlunsplit(parts._replace(query=urlencode(query)))


def is_placeholder(data: bytes) -> bool:
    """Whether ``data`` is QQ's default-avatar placeholder."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest() in PLACEHOLDER_MD5


async def fetch_avatar(
    session: aiohttp.ClientSession, avatar: Avatar, options: RequestOptions
) -> ReferenceImage:
    """Download an avatar; the placeholder is retried small, then ``AvatarMissingError``."""
    data = await _download(session, avatar.url, options)
    if is_placeholder(data):
        small = smaller_url(avatar.url)
        data = await _download(session, small, options) if small else data
        if is_placeholder(data):
            raise AvatarMissingError(f"user {avatar.user_id} has the default avatar")
    mime = sniff_mime(data)
    if mime is None:
        raise ReferenceImageError(
            f"avatar of {avatar.user_id} is not an image", user_message=AVATAR_FAILED_REPLY
        )
    return ReferenceImage(data=data, mime=mime)


async def _download(session: aiohttp.ClientSession, url: str, options: RequestOptions) -> bytes:
    try:
        data, _ = await download(session, url, options)
    except BackendError as err:
        raise ReferenceImageError(
            f"avatar download failed: {err}", user_message=AVATAR_FAILED_REPLY
        ) from err
    return data
