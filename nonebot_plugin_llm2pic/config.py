"""The NoneBot ``.env`` layer: only what must be known before ``llm2pic.toml`` is read."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

PLUGIN_NAME = "nonebot_plugin_llm2pic"
CONFIG_FILENAME = "llm2pic.toml"
CONFIG_ENV = "LLM2PIC_CONFIG"


class Config(BaseModel):
    """Plugin options read from NoneBot's env/.env (prefix ``llm2pic_``)."""

    llm2pic_config: Path | None = None
    """Path of llm2pic.toml; default: llm2pic.toml in the plugin's localstore config dir."""


def resolve_config_path(explicit: Path | str | None = None) -> Path:
    """Where ``llm2pic.toml`` is: ``--config`` > env/.env ``LLM2PIC_CONFIG`` > localstore dir.

    Called by the plugin (``explicit`` from NoneBot's config) and by CLI verbs that run outside
    a loaded plugin, so localstore is asked by the plugin's explicit name.
    """
    chosen = explicit or os.environ.get(CONFIG_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    from nonebot_plugin_localstore import get_config_file

    return get_config_file(PLUGIN_NAME, CONFIG_FILENAME)


def data_dir() -> Path:
    """The plugin's localstore data dir (quota database, group deny list, saved images)."""
    from nonebot_plugin_localstore import get_data_dir

    return get_data_dir(PLUGIN_NAME)
