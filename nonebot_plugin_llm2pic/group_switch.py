"""Per-group on/off (`/llm2pic on|off`): a deny list persisted as JSON in the data dir."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .settings_store import atomic_write

log = logging.getLogger("nonebot_plugin_llm2pic")


class GroupSwitch:
    """Groups are on by default; ``disable`` adds one to the persisted deny list."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.disabled: set[str] = set()
        try:
            loaded = json.loads(path.read_text("utf-8"))
            self.disabled = {str(group) for group in loaded}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as err:
            log.error("group deny list %s unreadable, all groups on: %s", path, err)

    def is_enabled(self, group_id: str) -> bool:
        """Whether drawing is on in this group."""
        return group_id not in self.disabled

    def set_enabled(self, group_id: str, enabled: bool) -> None:
        """Switch a group on or off and persist the deny list."""
        disabled = self.disabled - {group_id} if enabled else self.disabled | {group_id}
        atomic_write(self.path, json.dumps(sorted(disabled), ensure_ascii=False))
        self.disabled = disabled
