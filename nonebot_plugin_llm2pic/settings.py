"""Typed schema of ``llm2pic.toml``.

Pure pydantic: no NoneBot, no I/O. ``parse_settings`` turns the plain dict read from TOML into a
``Settings`` object, merging ``[backends.NAME]`` tables over the built-ins and translating
validation errors into one ``SettingsError`` that names the dotted key, the expectation and the
value given.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .exceptions import SettingsError

PromptStyle = Literal["natural", "tags"]
CropPosition = Literal["top", "bottom", "left", "right"]
MultiImage = Literal["message", "forward"]
AvatarSubjects = Literal["self", "members", "off"]
VisionMode = Literal["auto", "on", "off"]
VisionDetail = Literal["low", "high", "auto"]
SendFormat = Literal["auto", "original", "jpeg", "png"]

DEFAULT_AVATAR_URL = "https://q1.qlogo.cn/g?b=qq&nk={user_id}&s=640"

SECRET_KEYS = frozenset({"api_key", "token"})
"""Field names whose values are secrets: masked on output, settable only in private."""

ENV_PREFIX = "env:"

GRADIO_PLACEHOLDERS = frozenset(
    {
        "prompt",
        "negative_prompt",
        "seed",
        "resolution",
        "width",
        "height",
        "steps",
        "shift",
        "random_seed",
        "image",
    }
)
"""The ``{name}`` placeholders a Gradio ``inputs`` template may use."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")


def _http_url(value: str) -> str:
    """An empty string or an http(s) URL: ``api.deepseek.com`` alone would never connect."""
    if value and not re.match(r"https?://[^/\s]", value, re.IGNORECASE):
        raise ValueError(f"需要以 http:// 或 https:// 开头的地址，收到 {value!r}")
    return value


def _id_text(value: Any) -> Any:
    """QQ ids are often typed as bare numbers; keep them as text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""A URL setting: ``""`` (unset) or ``http(s)://…``."""

UserId = Annotated[str, BeforeValidator(_id_text)]
"""A QQ id, given as text or as a number."""


class _Section(BaseModel):
    # No inf/nan: `user_cooldown_seconds = inf` would crash the "wait N seconds" reply.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


class PluginSection(_Section):
    enabled: bool = True
    command: str = "pic"
    natural_language: bool = True
    require_mention: bool = False
    priority: int = 50
    allow_flags: bool = False
    show_prompt: bool = False
    blocked_users: list[UserId] = []
    selfie: bool = True
    reply_to_request: bool = True
    ack_message: str = "收到，正在画…"
    send_mode: Literal["base64", "file"] = "base64"
    max_send_bytes: int = Field(default=4_000_000, ge=100_000)
    send_format: SendFormat = "auto"
    save_images: bool = False
    multi_image: MultiImage = "message"
    recall_ack: bool = True
    recall_after: float = Field(default=0, ge=0)
    download_proxy: HttpUrl = ""
    groups_default: Literal["on", "off"] = "on"
    """``off`` = whitelist mode: a group draws only once a superuser switched it on."""
    avatar_url: HttpUrl = DEFAULT_AVATAR_URL
    avatar_subjects: AvatarSubjects = "self"

    @field_validator("avatar_url")
    @classmethod
    def _check_avatar_url(cls, value: str) -> str:
        if "{user_id}" not in value:
            raise ValueError(f"必须包含 {{user_id}}（换成 QQ 号），收到 {value!r}")
        return value


class PersonaSection(_Section):
    name: str = "小画"
    description: str = ""
    appearance: str = ""
    reference_images: list[str] = []
    """Image files (relative to the config file) or http(s) URLs showing the bot's look."""

    @field_validator("reference_images")
    @classmethod
    def _check_reference_images(cls, value: list[str], info: ValidationInfo) -> list[str]:
        roots = (info.context or {}).get(REFERENCE_ROOTS_CONTEXT)
        for entry in value:
            problem = reference_problem(entry, roots)
            if problem:
                raise ValueError(f"{entry!r}{problem}")
        return value


class LlmSection(_Section):
    base_url: HttpUrl = ""
    api_key: str = ""
    model: str = ""
    stream: bool = False
    timeout: float = Field(default=60, gt=0)
    temperature: float = Field(default=0.7, ge=0, le=2)
    system_prompt: str = ""
    context_message_limit: int = Field(default=20, ge=0)
    context_time_minutes: int = Field(default=30, ge=0)
    judge_intent: bool = False
    proxy: HttpUrl = ""
    vision: VisionMode = "auto"
    vision_detail: VisionDetail = "low"
    vision_max_side: int = Field(default=1024, ge=64, le=4096)
    vision_max_images: int = Field(default=3, ge=1, le=16)
    vision_chat_images: int = Field(default=0, ge=0, le=16)

    @property
    def configured(self) -> bool:
        """Whether a prompt-writer LLM is configured at all."""
        return bool(self.base_url and self.model)


class RoutingSection(_Section):
    default: str = "zimage"
    fallback: list[str] = []
    anime: str = ""
    real: str = ""
    selfie: str = ""


class GenerationSection(_Section):
    custom_prompt_add: str = ""
    negative_prompt: str = ""
    banned_words: list[str] = []
    crop_enabled: bool = False
    crop_position: CropPosition = "bottom"
    crop_pixels: int = Field(default=40, ge=0, le=4096)


class LimitsSection(_Section):
    user_cooldown_seconds: float = Field(default=30, ge=0)
    user_per_minute: int = Field(default=5, ge=0)
    user_daily_quota: int = Field(default=20, ge=0)
    group_daily_quota: int = Field(default=100, ge=0)
    quota_timezone: str = ""
    job_timeout: float = Field(default=300, gt=0)
    max_concurrency: int = Field(default=2, ge=1)
    max_queue: int = Field(default=20, ge=1)
    superusers_exempt: bool = True
    max_images_per_request: int = Field(default=4, ge=1, le=10)

    @model_validator(mode="after")
    def _check_timezone(self) -> LimitsSection:
        if self.quota_timezone:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.quota_timezone)
            except (ZoneInfoNotFoundError, ValueError) as err:
                raise ValueError(
                    f"limits.quota_timezone: 未知的时区 {self.quota_timezone!r}"
                    "（应为 IANA 时区名，如 Asia/Shanghai）"
                ) from err
        return self


class _BackendBase(_Section):
    enabled: bool = True
    base_url: HttpUrl
    timeout: float = Field(default=120, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    proxy: HttpUrl = ""
    prompt_style: PromptStyle = "natural"


class GradioBackendSettings(_BackendBase):
    type: Literal["gradio"]
    api_name: str = "generate"
    token: str = ""
    resolution: str = "1024x1024 ( 1:1 )"
    steps: int = Field(default=8, ge=1)
    shift: float = 3
    seed: int = -1
    inputs: list[Any] | None = None
    output_index: int = Field(default=0, ge=0)

    @field_validator("inputs")
    @classmethod
    def _check_placeholders(cls, inputs: list[Any] | None) -> list[Any] | None:
        used = {
            name
            for item in inputs or []
            if isinstance(item, str)
            for name in _PLACEHOLDER.findall(item)
        }
        unknown = used - GRADIO_PLACEHOLDERS
        if unknown:
            names = " ".join(f"{{{name}}}" for name in sorted(unknown))
            known = " ".join(f"{{{name}}}" for name in sorted(GRADIO_PLACEHOLDERS))
            raise ValueError(f"未知的占位符 {names}（可用：{known}）")
        return inputs

    @property
    def supports_references(self) -> bool:
        """A Gradio app takes references only when its input template has an ``{image}`` slot."""
        return self.inputs is not None and any(
            isinstance(item, str) and "{image}" in item for item in self.inputs
        )


class OpenAIBackendSettings(_BackendBase):
    type: Literal["openai"]
    api_key: str = ""
    mode: Literal["images", "chat"] = "images"
    model: str = "gpt-image-1"
    size: str = "1024x1024"
    use_sse: bool = False
    timeout: float = Field(default=180, gt=0)
    response_format: Literal["", "b64_json", "url"] = ""
    quality: str = ""
    extra_body: dict[str, Any] = {}
    """Extra JSON fields for generations/chat requests, e.g. OpenRouter's
    ``{modalities = ["image", "text"]}``; ``stream`` stays ours."""

    @property
    def supports_references(self) -> bool:
        """Images edits and chat image parts both accept reference images."""
        return True


BackendSettings = Annotated[
    GradioBackendSettings | OpenAIBackendSettings, Field(discriminator="type")
]

BUILTIN_BACKENDS: dict[str, dict[str, Any]] = {
    "zimage": {
        "type": "gradio",
        "base_url": "https://tongyi-mai-z-image-turbo.hf.space",
        "api_name": "generate",
        "timeout": 120,
    },
    "openai": {
        "type": "openai",
        "base_url": "https://api.openai.com/v1",
        "mode": "images",
        "model": "gpt-image-1",
        "timeout": 180,
    },
}


class Settings(_Section):
    plugin: PluginSection = PluginSection()
    persona: PersonaSection = PersonaSection()
    llm: LlmSection = LlmSection()
    routing: RoutingSection = RoutingSection()
    generation: GenerationSection = GenerationSection()
    limits: LimitsSection = LimitsSection()
    backends: dict[str, BackendSettings] = {}
    groups: dict[str, dict[str, Any]] = {}
    """``[groups."<id>"]`` tables as written; ``effective()`` gives a group's merged settings."""

    _effective: dict[str, Settings] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_backends(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = data.get("backends") or {}
        if not isinstance(given, dict):
            return data  # let field validation report the wrong type
        merged: dict[str, Any] = {}
        for name in {**BUILTIN_BACKENDS, **given}:
            table = given.get(name, {})
            if not isinstance(table, dict):
                merged[name] = table
                continue
            builtin = BUILTIN_BACKENDS.get(name, {})
            if "type" in table and builtin and table["type"] != builtin["type"]:
                builtin = {}  # a built-in name re-typed: start from scratch
            combined = {**builtin, **table}
            if combined.get("enabled", True) is not False:
                merged[name] = combined
        return {**data, "backends": merged}

    @model_validator(mode="after")
    def _check_routing(self) -> Settings:
        names = set(self.backends)
        routed = {
            "routing.default": [self.routing.default],
            "routing.anime": [self.routing.anime] if self.routing.anime else [],
            "routing.real": [self.routing.real] if self.routing.real else [],
            "routing.selfie": [self.routing.selfie] if self.routing.selfie else [],
            "routing.fallback": self.routing.fallback,
        }
        for key, values in routed.items():
            for value in values:
                if value not in names:
                    known = ", ".join(sorted(names)) or "无"
                    raise ValueError(f"{key}: 没有启用名为 {value!r} 的后端（已启用：{known}）")
        return self

    @model_validator(mode="after")
    def _check_groups(self) -> Settings:
        # Validating a group means building its effective settings: keep them for effective().
        for group_id, table in self.groups.items():
            if not group_id.isdigit():
                raise ValueError(f'groups.{group_id}: 群设置要用群号命名，如 [groups."123456"]')
            self._effective[group_id] = _group_settings(self, group_id, table)
        return self


def routed_backends(settings: Settings) -> set[str]:
    """Backend names the bot routes to: ``[routing]`` and every group's ``routing.*``."""
    names: set[str] = set()
    for routing in [settings.routing, *(effective(settings, g).routing for g in settings.groups)]:
        for value in routing.model_dump().values():  # every routing key, whatever its name
            names |= set(value) if isinstance(value, list) else {value}
    return names - {""}


# --- per-group settings ---------------------------------------------------------------------------

GROUP_KEYS: tuple[str, ...] = (
    "persona.*",
    "routing.*",
    "generation.*",
    "limits.user_cooldown_seconds",
    "limits.user_per_minute",
    "limits.user_daily_quota",
    "limits.group_daily_quota",
    "plugin.natural_language",
    "plugin.selfie",
    "plugin.require_mention",
    "plugin.ack_message",
    "plugin.show_prompt",
    "plugin.reply_to_request",
    "plugin.allow_flags",
    "plugin.enabled",
    "plugin.multi_image",
    "plugin.send_format",
    "plugin.recall_ack",
    "plugin.recall_after",
)
"""Keys a ``[groups."<id>"]`` table may override (``section.*`` = every key of the section).
A key listed here counts only once the schema has it."""

_SECTION_MODELS: dict[str, type[_Section]] = {
    "plugin": PluginSection,
    "persona": PersonaSection,
    "llm": LlmSection,
    "routing": RoutingSection,
    "generation": GenerationSection,
    "limits": LimitsSection,
}
"""The sections that are one model each (``backends`` and ``groups`` are tables of tables)."""

_GLOBAL_REASONS = {
    "backends": "后端表只能全局设置（用 routing.* 让本群使用某个后端）",
    "groups": "群设置不能嵌套",
    "llm": "写提示词的 LLM 只能全局设置（写在 [llm]）",
    "limits": "这是全局限额，只能全局设置（写在 [limits]）",
    "plugin": "这个键不能按群设置，只能全局设置（写在 [plugin]）",
}
_UNKNOWN_KEY = "未知的键（检查拼写，可用的键见 config.example.toml）"


def group_key_problem(key: str) -> str | None:
    """Why a dotted key (``persona.name``, or a section) cannot go in a group table, or None."""
    section, _, name = key.partition(".")
    if section in ("backends", "groups"):
        return _GLOBAL_REASONS[section]
    model = _SECTION_MODELS.get(section)
    if model is None or "." in name or (name and name not in model.model_fields):
        return _UNKNOWN_KEY
    if name in SECRET_KEYS:
        return "密钥只能全局设置，不能写在群设置里"
    if f"{section}.*" in GROUP_KEYS or key in GROUP_KEYS:
        return None
    if not name and any(allowed.startswith(f"{section}.") for allowed in GROUP_KEYS):
        return None  # a section some of whose keys are allowed
    return _GLOBAL_REASONS[section]


def group_keys() -> list[str]:
    """Every dotted key a group table may override today, in schema order."""
    return [
        f"{section}.{name}"
        for section, model in _SECTION_MODELS.items()
        for name in model.model_fields
        if group_key_problem(f"{section}.{name}") is None
    ]


def effective(settings: Settings, group_id: str | None) -> Settings:
    """The settings that apply in a group: global ⊕ its table (private chats: global).

    Cached on the ``Settings`` object, so a config edit or reload starts afresh.
    """
    if group_id is None:
        return settings
    cached = settings._effective.get(group_id)
    if cached is None:
        # No table: the global settings, off in whitelist mode. One object for all such groups.
        cached = settings._effective.get("")
        if cached is None:
            cached = settings._effective[""] = _group_settings(settings, "", {})
    return cached


def switched_off(settings: Settings, group_id: str) -> bool:
    """Whether the group's own table says ``plugin.enabled = false`` (``/llm2pic off``)."""
    return settings.groups.get(group_id, {}).get("plugin", {}).get("enabled") is False


def _group_settings(settings: Settings, group_id: str, table: dict[str, Any]) -> Settings:
    """Validate one group table over the global settings; ``ValueError`` names the key."""
    prefix = f"groups.{group_id}"
    updates: dict[str, Any] = {}
    for section, values in table.items():
        problem = group_key_problem(section)
        if not isinstance(values, dict):
            expected = f"应为表，如 {section}.键 = 值"
            raise ValueError(f"{prefix}.{section}: {problem or expected}")
        for name in values:  # key by key, so the reply names the key and says why
            key_problem = group_key_problem(f"{section}.{name}")
            if key_problem:
                raise ValueError(f"{prefix}.{section}.{name}: {key_problem}")
        if problem:  # an empty table of a global section
            raise ValueError(f"{prefix}.{section}: {problem}")
        current = getattr(settings, section)
        merged = {**current.model_dump(), **values}
        if section == "generation" and isinstance(values.get("banned_words"), list):
            merged["banned_words"] = list(
                dict.fromkeys([*current.banned_words, *values["banned_words"]])
            )
        try:
            updates[section] = type(current).model_validate(merged)
        except ValidationError as err:
            raise ValueError(str(settings_error_from(err, prefix=f"{prefix}.{section}"))) from None
    plugin = updates.get("plugin", settings.plugin)
    own = "enabled" in table.get("plugin", {})
    enabled = plugin.enabled if own else settings.plugin.groups_default == "on"
    updates["plugin"] = plugin.model_copy(update={"enabled": settings.plugin.enabled and enabled})
    result = settings.model_copy(update={**updates, "groups": {}})
    result._effective = {}
    try:  # the global routing check, run on the group's routing (pydantic keeps it callable)
        result._check_routing()  # pyright: ignore[reportCallIssue]
    except ValueError as err:  # "routing.default: …" → "groups.<id>.routing.default: …"
        raise ValueError(f"{prefix}.{err}") from None
    return result


_SETTINGS_ADAPTER = TypeAdapter(Settings)


def parse_settings(data: dict[str, Any], roots: tuple[Path, ...] | None = None) -> Settings:
    """Validate a plain TOML dict; raise ``SettingsError`` naming the first bad key.

    ``roots``: the config file's folder first, then the other folders reference image files may
    live in (the data dir); given, relative file entries are resolved against the first and must
    land inside one of them.
    """
    context = {REFERENCE_ROOTS_CONTEXT: roots} if roots else None
    try:
        return _SETTINGS_ADAPTER.validate_python(data, context=context)
    except ValidationError as err:
        raise settings_error_from(err) from None


_EXPECTED = {
    "int_parsing": "应为整数",
    "int_type": "应为整数",
    "int_from_float": "应为整数",
    "float_parsing": "应为数字",
    "float_type": "应为数字",
    "finite_number": "应为有限的数字",
    "bool_parsing": "应为 true 或 false",
    "bool_type": "应为 true 或 false",
    "string_type": "应为字符串",
    "list_type": '应为列表，如 ["a", "b"]',
    "dict_type": "应为表",
    "model_type": "应为表",
    "model_attributes_type": "应为表",
}
"""Pydantic error types → what the key expects, in the words the admin reads."""

_BOUNDS = {
    "greater_than_equal": ("ge", "不能小于"),
    "greater_than": ("gt", "必须大于"),
    "less_than_equal": ("le", "不能大于"),
    "less_than": ("lt", "必须小于"),
}


def add_backend_hint(name: str) -> str:
    """How to add a backend in one edit (type and base_url must arrive together)."""
    return (
        f"新增后端请一次写全：set backends.{name} "
        f'\'{{type = "gradio", base_url = "https://…"}}\'（openai 类型同理）'
    )


def settings_error_from(err: ValidationError, *, prefix: str = "") -> SettingsError:
    """Turn pydantic's report into one Chinese message: dotted key, expectation, value given.

    ``prefix`` names where the validated data sits (``groups.123456.limits``).
    """
    lines = []
    first_key = ""
    for item in err.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        # Drop the discriminator tag pydantic inserts into union paths (backends.x.gradio.steps).
        if len(loc) >= 3 and loc[0] == "backends" and loc[2] in ("gradio", "openai"):
            del loc[2]
        key = ".".join(loc)
        kind = item["type"]
        ctx = item.get("ctx", {})
        message = str(ctx.get("error", item["msg"]))
        head = message.split(" ", 1)[0]
        if kind == "value_error" and head.endswith(":"):
            key = head[:-1]  # our model validators name their own key: "routing.default: …"
            message = message.split(" ", 1)[1]
        first_key = first_key or key
        new_backend = len(loc) >= 2 and loc[0] == "backends"
        given = _short(item.get("input"))
        if kind == "extra_forbidden":
            lines.append(f"{key}: 未知的键（检查拼写，可用的键见 config.example.toml）")
        elif kind == "missing":
            hint = f"；{add_backend_hint(loc[1])}" if new_backend else ""
            lines.append(f"{key}: 缺少这个键{hint}")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            hint = f"；{add_backend_hint(loc[1])}" if new_backend else ""
            lines.append(f'{key}: 后端需要 type = "gradio" 或 "openai"{hint}')
        elif kind == "value_error":
            lines.append(f"{key}: {message}")
        elif kind in _BOUNDS:
            bound, words = _BOUNDS[kind]
            lines.append(f"{key}: {words} {ctx.get(bound)}，收到 {given}")
        elif kind == "literal_error":
            choices = str(ctx.get("expected", "")).replace(" or ", " 或 ")
            lines.append(f"{key}: 只能是 {choices}，收到 {given}")
        elif kind in _EXPECTED:
            lines.append(f"{key}: {_EXPECTED[kind]}，收到 {given}")
        else:
            lines.append(f"{key}: {item['msg'].lower()}，收到 {given}")
    if prefix:
        lines = [f"{prefix}.{line}" for line in lines]
        first_key = f"{prefix}.{first_key}"
    return SettingsError("；".join(lines), key=first_key)


REFERENCE_ROOTS_CONTEXT = "reference_roots"


def is_url(entry: str) -> bool:
    """A ``persona.reference_images`` entry given as an http(s) URL."""
    return entry.startswith(("http://", "https://"))


def resolve_reference(entry: str, roots: tuple[Path, ...]) -> Path:
    """A file entry of ``persona.reference_images`` as an absolute path (``roots[0]`` = base)."""
    return (roots[0] / Path(entry).expanduser()).resolve()


def reference_problem(entry: str, roots: tuple[Path, ...] | None) -> str:
    """Why an entry cannot be a reference image ("" when it can); paths checked given roots."""
    if is_url(entry):
        return ""
    if not entry.strip():
        return "是空的"
    if "://" in entry or entry.lower().startswith(("data:", "file:")):
        return "不是图片文件，也不是 http(s) 链接"
    if roots is None:
        return ""
    path = resolve_reference(entry, roots)
    if not any(path.is_relative_to(root.resolve()) for root in roots):
        return "不在配置文件所在的文件夹或插件数据目录内"
    return ""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_secret(value: str) -> str:
    """Expand ``"env:NAME"`` to the environment variable's value ("" when unset)."""
    if value.startswith(ENV_PREFIX):
        return os.environ.get(value[len(ENV_PREFIX) :].strip(), "")
    return value


def mask_secret(value: str) -> str:
    """Show a secret as ``sk-****abcd``; env references stay readable, they hold no secret."""
    if not value or value.startswith(ENV_PREFIX):
        return value
    if len(value) <= 8:
        return "****"
    head = value[:3] if value[2:3] == "-" or value[2:3] == "_" else value[:2]
    return f"{head}****{value[-4:]}"
