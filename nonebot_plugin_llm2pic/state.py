"""The plugin's long-lived objects, created once when NoneBot loads the plugin.

Paths come from localstore (or ``LLM2PIC_CONFIG``), so this module is imported only in plugin
context, after ``require("nonebot_plugin_localstore")``.
"""

from __future__ import annotations

from nonebot import get_plugin_config, logger

from .config import Config, data_dir, resolve_config_path
from .group_switch import GroupSwitch
from .settings_store import SettingsStore

plugin_config = get_plugin_config(Config)

store = SettingsStore(resolve_config_path(plugin_config.llm2pic_config))
store.load()
if store.last_error:
    logger.error(f"llm2pic: {store.path} is invalid, running with defaults: {store.last_error}")
else:
    logger.info(f"llm2pic: config {store.path}")

groups = GroupSwitch(data_dir() / "disabled_groups.json")
