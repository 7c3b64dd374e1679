"""One log for the plugin, and secrets kept out of it.

Library modules log to the stdlib logger ``LOGGER_NAME`` and import nothing of NoneBot, so the
CLI can use them bare (Python's last-resort handler prints their warnings on stderr). When the
plugin loads, ``bridge_to_nonebot()`` forwards that logger to NoneBot's loguru logger: one
format, and NoneBot's ``LOG_LEVEL`` decides what is shown.

``install_log_masking()`` (call it after ``nonebot.init()``) masks configured secrets
(``api_key``/``token`` values of the running plugin), key-like tokens (``sk-…``, ``hf_…``,
``AIza…``) and the value after ``….api_key``/``….token`` (a key being set by chat) in every line,
NoneBot's own message log included. ``serve`` installs it; so can a ``bot.py``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

from .settings import SECRET_KEYS, Settings, mask_secret, resolve_secret
from .transport import MIN_MASKED_SECRET, SECRET_LIKE

LOGGER_NAME = "nonebot_plugin_llm2pic"

_SECRET_ASSIGNMENT = re.compile(
    rf"(?P<key>\.(?:{'|'.join(sorted(SECRET_KEYS))})\b['\"]?\s*[=:]?\s*['\"]?)"
    r"(?P<value>[^\s'\"\\]+(?:[ \t]+[^\s'\"\\]+)*)"
)
"""``backends.x.api_key VALUE`` (a chat ``set`` command), ``.token = "VALUE"`` and the like.

The value runs to the closing quote or the line's end: a key pasted as ``Bearer KEY`` is two
words, and both are masked."""

_secrets_cache: tuple[Any, tuple[str, ...]] = (None, ())


def bridge_to_nonebot() -> None:
    """Send the plugin's stdlib log lines to NoneBot's logger only; idempotent."""
    from nonebot.log import LoguruHandler

    stdlib = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in stdlib.handlers if isinstance(h, LoguruHandler)]:
        stdlib.removeHandler(handler)
    stdlib.addHandler(LoguruHandler())
    stdlib.setLevel(logging.DEBUG)  # NoneBot's sink filters by its LOG_LEVEL


def configured_secrets(settings: Settings) -> tuple[str, ...]:
    """The resolved values of every ``api_key``/``token`` in ``settings``, longest first."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in SECRET_KEYS and isinstance(value, str):
                    found.append(resolve_secret(value))
                else:
                    walk(value)

    walk(settings.model_dump())
    return tuple(sorted({s for s in found if len(s) >= MIN_MASKED_SECRET}, key=len, reverse=True))


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known secrets, key-like tokens and chat-set secret values masked."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, mask_secret(secret))
    text = SECRET_LIKE.sub(lambda m: mask_secret(m[0]), text)
    return _SECRET_ASSIGNMENT.sub(lambda m: m["key"] + mask_secret(m["value"]), text)


def install_log_masking() -> None:
    """Mask every line of NoneBot's logger from now on; call it after ``nonebot.init()``.

    ``nonebot.init()`` installs NoneBot's own loguru patcher (it shortens module names to plugin
    names), and a logger has one patcher: ours masks the line, then runs NoneBot's.
    """
    import nonebot
    from nonebot.log import logger

    nonebot_patcher = getattr(nonebot, "_log_patcher", None)

    def patcher(record: Any) -> None:
        record["message"] = mask_secrets(record["message"], _live_secrets())
        if nonebot_patcher is not None:
            nonebot_patcher(record)

    logger.configure(patcher=patcher)


def _live_secrets() -> tuple[str, ...]:
    """The running plugin's configured secrets (none before it has loaded)."""
    global _secrets_cache
    state = sys.modules.get(f"{LOGGER_NAME}.state")
    store = getattr(state, "store", None)
    settings = getattr(store, "settings", None)
    if settings is None:
        return ()
    if _secrets_cache[0] is not settings:
        _secrets_cache = (settings, configured_secrets(settings))
    return _secrets_cache[1]
