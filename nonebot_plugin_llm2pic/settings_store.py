"""The live settings and every edit of ``llm2pic.toml`` (`/llm2pic set`, `config set`, reload).

Edits go through tomlkit so comments and layout survive: re-read the file under a lock, convert
the value to the type of the field it sets, validate the whole result, write atomically (temp file
+ rename), then swap the live ``Settings``. A rejected edit leaves the file byte-for-byte unchanged.

Every content that loads or is written successfully is also copied to ``llm2pic.last-good.toml``
in the data dir. When the file turns invalid (a typo in a hand edit), the store runs that copy, so
an edit made by another process (the CLI) since the bot last read the file is not lost; at
start-up with a broken file it runs the copy, or the defaults when there is none.
No NoneBot imports: the CLI and the bot share this module.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import tomlkit
from pydantic import BaseModel
from tomlkit.exceptions import (
    InvalidControlChar,
    ParseError,
    TOMLKitError,
    UnexpectedCharError,
    UnexpectedEofError,
)
from tomlkit.items import KeyType, SingleKey

from .exceptions import SettingsError
from .settings import (
    SECRET_KEYS,
    GradioBackendSettings,
    OpenAIBackendSettings,
    Settings,
    add_backend_hint,
    effective,
    group_key_problem,
    group_keys,
    mask_secret,
    parse_settings,
)

try:  # POSIX: lock across processes so the CLI and a running bot can both edit the file.
    import fcntl
except ImportError:  # pragma: no cover - Windows: the in-process lock still serialises the bot
    fcntl = None

log = logging.getLogger("nonebot_plugin_llm2pic")

EXAMPLE_NAME = "config.example.toml"
LAST_GOOD_NAME = "llm2pic.last-good.toml"

Source = Literal["file", "last-good", "defaults"]
"""What the live settings come from: the file, the saved last valid content, or the defaults."""

RUNNING_LOG: dict[Source, str] = {
    "file": "the file",
    "last-good": "the last valid content",
    "defaults": "the defaults",
}
RUNNING_CHAT: dict[Source, str] = {
    "file": "配置文件",
    "last-good": "上一次的有效配置",
    "defaults": "默认配置",
}
MAX_VALUE_CHARS = 4000
"""Longest value accepted from `set`: a config value has no business being longer."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""TOML integers are signed 64-bit; larger ones would make a file other tools reject."""

GROUP_MARK = "本群"
"""Comment on a value a group's own table sets, in `show` inside a group."""

RESTART_KEYS = frozenset({"plugin.command", "plugin.priority"})
"""Keys read once when matchers are registered: edits apply after a restart."""

_BACKEND_MODELS: dict[str, type[BaseModel]] = {
    "gradio": GradioBackendSettings,
    "openai": OpenAIBackendSettings,
}


def example_text() -> str:
    """The packaged, fully commented example config."""
    return Path(__file__).with_name(EXAMPLE_NAME).read_text("utf-8")


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_secret_key(key: str) -> bool:
    """Whether a dotted key names a secret (``api_key``, ``token``)."""
    return key.rsplit(".", 1)[-1] in SECRET_KEYS


@dataclass(frozen=True)
class EditResult:
    """What an accepted edit did, for the reply."""

    key: str
    value: Any
    needs_restart: bool


class SettingsStore:
    """Owns the path, the live ``Settings`` and the lock every edit takes."""

    def __init__(
        self, path: Path, last_good: Path | None = None, *, data_dir: Path | None = None
    ) -> None:
        self.path = path
        self.last_good = last_good
        """Where the last valid content is kept (None: only in memory)."""
        self.data_dir = data_dir
        """Where else reference image files may live besides the config file's folder."""
        self.settings = Settings()
        self.source: Source = "defaults"
        self.last_error: SettingsError | None = None
        self._mtime_ns: int | None = None
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> Settings:
        """Start-up load: create the file from the example if missing.

        A bad file sets ``last_error`` and runs the saved last valid content, else the defaults
        (``source`` says which); the caller reports it.
        """
        with self._locked():
            if not self.path.exists():
                atomic_write(self.path, example_text())
                log.info("created %s from the example config", self.path)
            try:
                self._apply(self._parse_file())
            except SettingsError as err:
                self._fail(err)
        return self.settings

    def reload(self) -> Settings:
        """Re-read the file; on error run the last valid content and raise ``SettingsError``."""
        with self._locked():
            try:
                self._apply(self._parse_file())
            except SettingsError as err:
                self._fail(err)
                raise
        return self.settings

    def changed_on_disk(self) -> bool:
        """Whether the file's mtime moved since it was last read (one ``stat``)."""
        return self._stat_mtime() != self._mtime_ns

    def refresh_if_changed(self) -> bool:
        """Reload when the file's mtime moved (called before each job). Never raises."""
        if not self.changed_on_disk():
            return False
        if self._stat_mtime() is None:
            # Deleted while running: keep the last good config rather than fall back to the
            # defaults (other routing, no keys); the next edit or a new file brings it back.
            log.warning("config %s was deleted; keeping the settings in force", self.path)
            self._mtime_ns = None
            return False
        try:
            self.reload()
        except SettingsError as err:
            log.error(
                "config %s changed on disk but is invalid, running %s: %s",
                self.path,
                RUNNING_LOG[self.source],
                err,
            )
            return False
        log.info("config %s changed on disk, reloaded", self.path)
        return True

    @property
    def reference_roots(self) -> tuple[Path, ...]:
        """Folders persona reference files may live in; relative entries start at the first."""
        return (self.path.parent, *([self.data_dir] if self.data_dir else []))

    # -- reading ---------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The effective value at a dotted key (defaults included), secrets masked."""
        node: Any = self.settings
        for part in _split_key(key):
            if isinstance(node, BaseModel) and part in type(node).model_fields:
                node = getattr(node, part)
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise SettingsError(f"{key}: 未知的键{_hint(key, self.settings)}", key=key)
        return mask_tree(node, key)

    def show(self, section: str = "") -> str:
        """The effective config (or one section) as TOML text, secrets masked."""
        data = self.get(section) if section else mask_tree(self.settings, "")
        if isinstance(data, dict):
            # Nest the section under its parts: [backends.openai], never ["backends.openai"].
            for part in reversed(_split_key(section) if section else []):
                data = {part: data}
            document = tomlkit.document()
            document.update(data)
            return tomlkit.dumps(document).strip()
        return f"{section} = {toml_value(data)}"

    # -- editing ---------------------------------------------------------------------------

    def set(self, key: str, raw: str) -> EditResult:
        """Set a dotted key from its text form; validates everything before writing."""
        if group := _group_key(key):
            return self.set_group(*group, raw)
        _check_raw(key, raw)
        with self._locked():
            document = self._read_document()
            value = convert_value(key, raw, document, self.settings)
            _assign(document, key, value)
            return self._commit(document, key, value)

    def unset(self, key: str) -> EditResult:
        """Remove a dotted key from the file so its default applies again."""
        if group := _group_key(key):
            return self.unset_group(*group)
        with self._locked():
            document = self._read_document()
            parts = _split_key(key)
            parent = _walk(document, parts[:-1])
            if parent is None or parts[-1] not in parent:
                raise SettingsError(f"{key}: 文件里没有设置这个键（无需删除）", key=key)
            del parent[parts[-1]]
            return self._commit(document, key, None)

    # -- group tables ----------------------------------------------------------------------

    def get_group(self, group_id: str, key: str) -> tuple[Any, bool]:
        """A group's effective value at ``key`` and whether its own table sets it."""
        _group_path(group_id, key)
        section, name = key.split(".")
        value = getattr(getattr(effective(self.settings, group_id), section), name)
        return mask_tree(value, key), _group_overrides(self.settings, group_id, key)

    def set_group(self, group_id: str, key: str, raw: str) -> EditResult:
        """Set ``key`` (``persona.name``) in the group's ``[groups."<id>"]`` table."""
        path = _group_path(group_id, key)
        _check_raw(path, raw)
        with self._locked():
            document = self._read_document()
            try:
                value = convert_value(key, raw, document, self.settings)
            except SettingsError as err:
                raise SettingsError(f"groups.{group_id}.{err}", key=path) from None
            _assign_group(document, group_id, key, value)
            return self._commit(document, path, value)

    def unset_group(self, group_id: str, key: str) -> EditResult:
        """Drop ``key`` from the group's table (and the table once empty): global applies."""
        path = _group_path(group_id, key)
        with self._locked():
            document = self._read_document()
            groups = document.get("groups")
            table = groups.get(group_id) if isinstance(groups, dict) else None
            section, name = key.split(".")
            values = table.get(section) if isinstance(table, dict) else None
            if not isinstance(values, dict) or name not in values:
                raise SettingsError(f"{path}: 本群没有单独设置这个键（无需删除）", key=path)
            del values[name]
            if not values:
                del table[section]  # type: ignore[index]
            if not table:
                del groups[group_id]  # type: ignore[index]
            if not groups:
                del document["groups"]
            return self._commit(document, path, None)

    def show_group(self, group_id: str, section: str = "", *, everything: bool = False) -> str:
        """A group's effective settings as TOML, its own overrides marked ``# 本群``.

        Only the keys a group may override, unless ``everything`` (superusers: the whole
        effective config, secrets masked).
        """
        tree = mask_tree(effective(self.settings, group_id), "")
        tree.pop("groups", None)
        if not everything:
            allowed = group_keys()
            tree = {
                name: {k: v for k, v in values.items() if f"{name}.{k}" in allowed}
                for name, values in tree.items()
                if any(key.startswith(f"{name}.") for key in allowed)
            }
        if section:
            if section not in tree:
                raise SettingsError(f"{section}: 未知的节（见 /llm2pic group show）")
            tree = {section: tree[section]}
        document = tomlkit.document()
        for name, values in tree.items():
            table = tomlkit.table()
            for key, value in values.items():
                item = tomlkit.item(value)
                if _group_overrides(self.settings, group_id, f"{name}.{key}"):
                    item.comment(GROUP_MARK)
                table.add(key, item)
            document.add(name, table)
        return tomlkit.dumps(document).strip()

    def migrate_deny_list(self, path: Path) -> list[str]:
        """Move the first release's group deny list (JSON) into the config, once.

        Each listed group without its own ``plugin.enabled`` gets ``plugin.enabled = false``.
        A marker file beside the list records the move; the list itself is left as it was.
        Raises ``SettingsError`` (and leaves no marker) when the config cannot take the edit.
        """
        marker = path.with_name(f"{path.name}.migrated")
        if marker.exists() or not path.exists():
            return []
        try:
            listed = sorted({str(group) for group in json.loads(path.read_text("utf-8"))})
        except (OSError, ValueError, TypeError) as err:
            log.error("group deny list %s unreadable, not migrated: %s", path, err)
            return []
        moved = []
        with self._locked():
            document = self._read_document()
            for group_id in filter(str.isdigit, listed):
                if _walk(document, ["groups", group_id, "plugin", "enabled"]) is None:
                    _assign_group(document, group_id, "plugin.enabled", False)
                    moved.append(group_id)
            if moved:
                self._commit(document, "groups", None)
        atomic_write(marker, f"moved into {self.path}: {', '.join(moved) or 'nothing'}\n")
        return moved

    # -- internals -------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if fcntl is None:
                yield
                return
            lock_path = self.path.with_name(f".{self.path.name}.lock")
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(lock_path, "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _stat_mtime(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def _read_document(self) -> tomlkit.TOMLDocument:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            text = example_text()  # deleted while running: edits start again from the example
        except OSError as err:
            raise SettingsError(f"无法读取 {self.path}：{err.strerror}") from err
        return parse_document(text, self.path.name)

    def _parse_file(self) -> tuple[Settings, int | None, str]:
        mtime = self._stat_mtime()
        if mtime is None:
            raise SettingsError(f"{self.path} 不存在（被删除了？）")
        document = self._read_document()
        settings = parse_settings(document.unwrap(), self.reference_roots)
        return settings, mtime, tomlkit.dumps(document)

    def _apply(self, parsed: tuple[Settings, int | None, str]) -> None:
        self.settings, self._mtime_ns, text = parsed
        self.source = "file"
        self.last_error = None
        self._save_last_good(text)

    def _fail(self, err: SettingsError) -> None:
        """The file is invalid: run the saved last valid content if there is one."""
        self.last_error = err
        self._mtime_ns = self._stat_mtime()
        saved = self._read_last_good()
        if saved is not None:
            self.settings, self.source = saved, "last-good"
        elif self.source == "file":
            self.source = "last-good"  # what was loaded before is the last valid content

    def _last_good_header(self) -> str:
        return f"# llm2pic: last valid content of {self.path}\n"

    def _save_last_good(self, text: str) -> None:
        if self.last_good is None:
            return
        content = self._last_good_header() + text
        try:
            if not self.last_good.exists() or self.last_good.read_text("utf-8") != content:
                atomic_write(self.last_good, content)
        except OSError as err:
            log.warning("cannot save the last valid config to %s: %s", self.last_good, err)

    def _read_last_good(self) -> Settings | None:
        """The saved last valid content of this file, or None (none saved, or another file's)."""
        if self.last_good is None:
            return None
        try:
            text = self.last_good.read_text("utf-8")
        except OSError:
            return None
        header = self._last_good_header()
        if not text.startswith(header):
            return None
        try:
            return parse_settings(parse_document(text[len(header) :], self.last_good.name).unwrap())
        except SettingsError:
            return None

    def _commit(self, document: tomlkit.TOMLDocument, key: str, value: Any) -> EditResult:
        settings = parse_settings(document.unwrap(), self.reference_roots)
        text = tomlkit.dumps(document)
        try:
            atomic_write(self.path, text)
        except OSError as err:
            raise SettingsError(f"无法写入 {self.path}：{err.strerror}", key=key) from err
        self.settings = settings
        self.source = "file"
        self._mtime_ns = self._stat_mtime()
        self.last_error = None
        self._save_last_good(text)
        return EditResult(key, mask_tree(value, key), key in RESTART_KEYS)


def _check_raw(key: str, raw: str) -> None:
    if len(raw) > MAX_VALUE_CHARS:
        raise SettingsError(f"{key}: 值太长（{len(raw)} 个字符，上限 {MAX_VALUE_CHARS}）", key=key)
    if not raw.isascii():
        try:  # a lone surrogate from a chat client's JSON cannot be written as UTF-8
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise SettingsError(f"{key}: 值不是有效的文本", key=key) from None


def _group_path(group_id: str, key: str) -> str:
    """``groups.<id>.<key>`` once the id and the key are fit for a group table."""
    path = f"groups.{group_id}.{key}"
    if not group_id.isdigit():
        raise SettingsError(f"{group_id!r}: 群号应为数字", key=path)
    _split_key(key)
    problem = group_key_problem(key)
    if problem is None and "." not in key:
        problem = "这是一个节，请写出其中的键"
    if problem:
        raise SettingsError(f"{path}: {problem}", key=path)
    return path


def _group_key(key: str) -> tuple[str, str] | None:
    """``groups.<id>.<section>.<name>`` as (id, ``section.name``), for the plain set/unset."""
    parts = key.strip().split(".", 2)
    return (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "groups" else None


def _group_overrides(settings: Settings, group_id: str, key: str) -> bool:
    section, _, name = key.partition(".")
    return name in settings.groups.get(group_id, {}).get(section, {})


def _assign_group(document: tomlkit.TOMLDocument, group_id: str, key: str, value: Any) -> None:
    """Write ``section.name = value`` into ``[groups."<id>"]`` as a dotted key."""
    if "groups" not in document:
        document["groups"] = tomlkit.table(is_super_table=True)
    groups: Any = document["groups"]
    if group_id not in groups:
        groups.add(SingleKey(group_id, t=KeyType.Basic), tomlkit.table())
    table = groups[group_id]
    section, name = key.split(".")
    if section in table:
        table[section][name] = value
    else:
        table.add(tomlkit.key([section, name]), value)


def parse_document(text: str, name: str) -> tomlkit.TOMLDocument:
    """Parse TOML text; a syntax error names the line and the likely slip, in Chinese."""
    try:
        return tomlkit.parse(text)
    except ParseError as err:
        if isinstance(err, InvalidControlChar):
            raise SettingsError(f"{name} 第 {err.line} 行的字符串没有结束（可能缺少引号）") from err
        reason = _syntax_reason(err, text)
        raise SettingsError(f"{name} 第 {err.line} 行不是有效的 TOML：{reason}") from err
    except TOMLKitError as err:
        raise SettingsError(f"{name} 不是有效的 TOML：{_syntax_reason(err, text)}") from err


_DUPLICATE = re.compile(r'Key "(.*)" already exists')
_CHINESE_QUOTES = "“”‘’「」『』"
_TYPING_HINT = '文字要用英文双引号括起来，键和值之间用 =，true/false 小写，如 name = "小画"'


def _syntax_reason(err: TOMLKitError, text: str) -> str:
    """What a hand-editor most likely got wrong (tomlkit's own words stay in the exception)."""
    if duplicate := _DUPLICATE.search(str(err)):
        return f"{duplicate[1]} 写了两次（同一个键或表只能出现一次）"
    if isinstance(err, UnexpectedEofError) or repr("\0") in str(err):  # the parser's EOF mark
        return "到文件末尾还没写完（可能缺少 ]、引号或值）"
    if isinstance(err, UnexpectedCharError):
        lines = text.splitlines()
        line = lines[err.line - 1] if 0 < err.line <= len(lines) else ""
        char = line[err.col] if 0 <= err.col < len(line) else ""
        if char in _CHINESE_QUOTES and char:
            return f'用了中文引号 {char}，请改成英文双引号 "'
        if not char:
            return "这一行没写完（可能缺少 ]、引号或值）"
        return f"无法识别的字符 {char!r}（{_TYPING_HINT}）"
    return f"写法不对（{_TYPING_HINT}）"


def toml_value(value: Any) -> str:
    """A value as TOML text (``true``, ``"小画"``, ``{type = "gradio"}``) that `set` takes back."""
    if value is None:
        return "（未设置）"
    if isinstance(value, dict):
        table = tomlkit.inline_table()
        table.update(value)
        return table.as_string()
    return tomlkit.item(value).as_string()


def mask_tree(value: Any, key: str) -> Any:
    """Plain data for display with every secret masked; models become dicts."""
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        return {k: mask_tree(v, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, str) and is_secret_key(key):
        return mask_secret(value)
    return value


def _split_key(key: str) -> list[str]:
    parts = key.strip().split(".")
    if not key.strip() or any(not part for part in parts):
        raise SettingsError(
            f"{key!r}: 不是点号路径的键，应类似 limits.user_cooldown_seconds", key=key
        )
    return parts


def _walk(document: Any, parts: list[str]) -> Any:
    node = document
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _assign(document: tomlkit.TOMLDocument, key: str, value: Any) -> None:
    parts = _split_key(key)
    node: Any = document
    for depth, part in enumerate(parts[:-1]):
        if part not in node:
            # Nested tables under [backends] are written as [backends.NAME] headers.
            node[part] = tomlkit.table(is_super_table=depth == 0 and parts[0] == "backends")
        node = node[part]
        if not isinstance(node, dict):
            raise SettingsError(f"{key}: {'.'.join(parts[: depth + 1])} 不是表", key=key)
    node[parts[-1]] = value


def field_annotation(key: str, document: Any, settings: Settings) -> Any:
    """The type annotation of the field a dotted key names, or ``SettingsError`` if none."""
    parts = _split_key(key)
    if len(parts) == 1 and parts[0] in Settings.model_fields:
        raise SettingsError(f"{key}: 是一节，请指定其中的键（见 /llm2pic show {key}）", key=key)
    if parts[0] == "backends" and len(parts) == 2:
        return dict  # a whole backend as an inline table: {type = "gradio", base_url = "…"}
    if parts[0] == "backends" and len(parts) == 3:
        table = _walk(document, parts[:2]) or {}
        current = settings.backends.get(parts[1])
        kind = table.get("type") or (current.type if current else None)
        if parts[2] == "type":
            return str
        model = _BACKEND_MODELS.get(str(kind))
        if model is None:
            raise SettingsError(
                f"{key}: 后端 {parts[1]} 还没有 type；{add_backend_hint(parts[1])}", key=key
            )
        parts = parts[2:]
    elif len(parts) == 2 and parts[0] in Settings.model_fields and parts[0] != "backends":
        model = Settings.model_fields[parts[0]].annotation
        parts = parts[1:]
    else:
        raise SettingsError(f"{key}: 未知的键{_hint(key, settings)}", key=key)
    assert isinstance(model, type)
    assert issubclass(model, BaseModel)
    field = model.model_fields.get(parts[0])
    if field is None:
        raise SettingsError(f"{key}: 未知的键{_hint(key, settings)}", key=key)
    return field.annotation


def convert_value(key: str, raw: str, document: Any, settings: Settings) -> Any:
    """Chat/CLI text → a TOML value of the field's type (``set persona.name 1999`` → "1999")."""
    annotation = field_annotation(key, document, settings)
    text = raw.strip()
    if annotation is str or _is_str_literal(annotation):
        parsed = _parse_toml_value(text)
        return parsed if isinstance(parsed, str) else text
    if annotation is dict and len(text) > 1 and text[0] == text[-1] == "'":
        text = text[1:-1]  # the shell-quoted form works in chat too: '{type = "gradio", …}'
    value = _parse_toml_value(text)
    if value is None:
        raise SettingsError(f"{key}: 应为{_type_name(annotation)}，收到 {text[:60]!r}", key=key)
    out_of_range = isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX
    if out_of_range and not isinstance(value, bool):
        raise SettingsError(f"{key}: {text[:60]} 超出范围（TOML 整数是 64 位）", key=key)
    return value


def _parse_toml_value(text: str) -> Any:
    """A single TOML value, or None. One key only: newlines cannot inject tables."""
    try:
        parsed = tomlkit.parse(f"v = {text}")
    except TOMLKitError:
        return None
    if list(parsed.keys()) != ["v"]:
        return None
    value = parsed["v"]
    return value.unwrap() if hasattr(value, "unwrap") else value


def _is_str_literal(annotation: Any) -> bool:
    return get_origin(annotation) is not None and all(
        isinstance(arg, str) for arg in get_args(annotation)
    )


def _type_name(annotation: Any) -> str:
    """The expected type in words (``list[Any] | None`` is a list, ``dict[str, Any]`` a table)."""
    names = {
        int: "整数",
        float: "数字",
        bool: " true 或 false",
        dict: "表",
        list: '列表，如 ["a", "b"]',
    }
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    return names.get(get_origin(annotation) or annotation, str(annotation).replace("typing.", ""))


def _hint(key: str, settings: Settings) -> str:
    known = list(_all_keys(mask_tree(settings, "")))
    close = difflib.get_close_matches(key, known, n=1)
    return f"（是不是 {close[0]}？）" if close else "（可用的键见 /llm2pic show）"


def _all_keys(tree: Any, prefix: str = "") -> Iterator[str]:
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from _all_keys(value, f"{key}.")
        else:
            yield key
