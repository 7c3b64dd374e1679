"""One error hierarchy; every error carries a short Chinese ``user_message`` for the chat.

Matchers and the CLI are the only places that catch broadly; they show ``user_message``.
``str(err)`` is the English admin/log text and never contains secrets or base64 payloads.

Backend errors compose their own ``user_message`` from a per-class template and their structured
fields (who failed, HTTP status, upstream text); raise sites never write chat text. Known upstream
failures (content policy, quota, balance, rate limit, unknown model) are recognised once, in
``classify_upstream``, and reach the chat translated; the upstream's own words stay in the log.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from .retry import RETRYABLE_STATUSES

Service = Literal["backend", "llm"]
"""What a ``BackendError`` is about: an image backend, or the prompt writer's LLM."""


class Llm2PicError(Exception):
    """Base of every error this plugin raises on purpose."""

    user_message: str = "出错了，请稍后再试"

    def __init__(self, message: str = "", *, user_message: str | None = None) -> None:
        super().__init__(message or user_message or self.user_message)
        if user_message is not None:
            self.user_message = user_message


class SettingsError(Llm2PicError):
    """The config file or an edit of it is invalid; ``key`` is the dotted path at fault."""

    def __init__(self, message: str, *, key: str = "") -> None:
        super().__init__(message, user_message=f"配置无效：{message}")
        self.key = key


class ImageError(Llm2PicError):
    """Bytes that are not a usable image (not an image, truncated, decompression bomb…)."""

    user_message = "生成结果不是有效的图片"


class ReferenceImageError(Llm2PicError):
    """A reference image from chat could not be fetched, or is not an image."""

    user_message = "参考图下载失败（可能已过期），请重新发送图片"


class BackendError(Llm2PicError):
    """A backend (or the LLM) failed; ``retryable`` and ``fallback`` steer retries and routing.

    ``template`` is formatted with ``who`` (「绘图服务 NAME」 or 「提示词模型（LLM）」) and the
    error's own fields; subclasses set their template and flags as class attributes.
    """

    template: ClassVar[str] = "{who}出错"
    retryable: bool = False
    fallback: bool = True

    def __init__(
        self,
        message: str = "",
        *,
        backend: str = "",
        service: Service = "backend",
        retryable: bool | None = None,
        fallback: bool | None = None,
    ) -> None:
        self.backend = backend
        self.service: Service = service
        if retryable is not None:
            self.retryable = retryable
        if fallback is not None:
            self.fallback = fallback
        super().__init__(message, user_message=self._compose())

    @property
    def who(self) -> str:
        """How the chat names what failed (a name is followed by a space, as Chinese text wants)."""
        return "提示词模型（LLM）" if self.service == "llm" else f"绘图服务 {self.backend} "

    def _compose(self) -> str:
        return self.template.format_map({**vars(self), "who": self.who}).strip()


class BackendStatusError(BackendError):
    """The upstream answered with an HTTP error status; ``body`` is a short (log-safe) excerpt.

    ``retryable`` follows the status (408/409/429/5xx) unless the class fixes it. Errors the
    upstream reports inside a 200 answer (a stream's error chunk, a Gradio ``error`` event) use
    these classes too, with ``status=200``.
    """

    template = "{who}出错（HTTP {status}）"
    retryable_by_status: ClassVar[bool] = True

    def __init__(
        self,
        message: str = "",
        *,
        backend: str = "",
        service: Service = "backend",
        status: int,
        body: str = "",
        retry_after: float | None = None,
        retryable: bool | None = None,
        fallback: bool | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after
        if retryable is None and self.retryable_by_status:
            retryable = status in RETRYABLE_STATUSES
        super().__init__(
            message or f"HTTP {status}: {body[:200]}",
            backend=backend,
            service=service,
            retryable=retryable,
            fallback=fallback,
        )


class BackendAuthError(BackendStatusError):
    """401/403: the backend is unusable with this key; not retried, fallback allowed."""

    template = "{who}认证失败"
    retryable = False
    retryable_by_status = False


class EndpointNotFoundError(BackendStatusError):
    """404 on an API path: ``base_url`` most likely lacks its API prefix (``/v1``)."""

    template = "{who}找不到 API 接口，请检查 base_url 是否以 API 前缀（如 /v1）结尾"
    retryable = False
    retryable_by_status = False


class ContentPolicyError(BackendStatusError):
    """The upstream refused the prompt; never retried and never sent to a fallback."""

    template = "{who}拒绝了这个请求（内容审核未通过）"
    retryable = False
    retryable_by_status = False
    fallback = False


class QuotaExhaustedError(BackendStatusError):
    """The upstream's quota is used up (ZeroGPU, a plan's limit): waiting seconds will not help."""

    template = "{who}的额度已用完，请稍后再试或换用其他服务"
    retryable = False
    retryable_by_status = False


class InsufficientBalanceError(QuotaExhaustedError):
    """The account behind the key has no money or credit left."""

    template = "{who}的账户余额不足，请管理员充值"


class RateLimitedError(BackendStatusError):
    """Too many requests: retried (``Retry-After`` honoured), then a fallback."""

    template = "{who}请求太频繁，被限流了，请稍后再试"
    retryable = True
    retryable_by_status = False


class ModelNotFoundError(BackendStatusError):
    """The configured model does not exist there (or the key may not use it)."""

    template = "{who}找不到所配置的模型，请检查 model 设置"
    retryable = False
    retryable_by_status = False


class BackendConnectionError(BackendError):
    """Could not connect, or the connection dropped before a response."""

    template = "无法连接{who}"
    retryable = True


class BackendTimeoutError(BackendError):
    """A connect, idle-read or total timeout expired."""

    template = "{who}超时"
    retryable = True


class StreamError(BackendError):
    """A stream was cut or malformed before a complete answer arrived."""

    template = "生成中断，请稍后再试"
    retryable = True


UpstreamProblem = Literal[
    "error", "failed", "malformed", "no_image", "bad_image", "bad_image_url", "upload"
]


class UpstreamError(BackendError):
    """The upstream failed in-band or answered with something unusable.

    ``problem`` says which; ``upstream`` is the upstream's own (masked, cut) text for an
    unrecognised ``error``, shown as it came since nothing better is known.
    """

    templates: ClassVar[dict[UpstreamProblem, str]] = {
        "error": "{who}报错：{upstream}",
        "failed": "{who}生成失败",
        "malformed": "{who}返回了无法解析的结果",
        "no_image": "{who}没有返回图片",
        "bad_image": "{who}返回的图片无效",
        "bad_image_url": "{who}返回了无效的图片地址",
        "upload": "{who}上传参考图失败",
    }

    def __init__(
        self,
        message: str = "",
        *,
        backend: str = "",
        service: Service = "backend",
        problem: UpstreamProblem = "error",
        upstream: str = "",
        retryable: bool | None = None,
    ) -> None:
        self.problem: UpstreamProblem = problem
        self.upstream = upstream
        super().__init__(message, backend=backend, service=service, retryable=retryable)

    def _compose(self) -> str:
        if self.problem == "error" and not self.upstream:
            return f"{self.who}报错（未给出原因）"
        return self.templates[self.problem].format(who=self.who, upstream=self.upstream)


class ResponseTooLargeError(BackendError):
    """A body or image exceeded its cap; rejected without reading it all."""

    template = "{who}返回的数据过大"


class ReferencesUnsupportedError(BackendError):
    """The backend cannot take reference images; routing may try a fallback that can."""

    template = "{who}不支持参考图，请只用文字描述"


class VisionRefusedError(Llm2PicError):
    """The LLM answered that it takes no images: a text-only model."""

    def __init__(self, message: str, *, model: str) -> None:
        super().__init__(
            message,
            user_message=f"提示词模型（LLM）{model} 不接受图片：请换一个能看图的模型，"
            "或把 llm.vision 设为 auto 或 off",
        )
        self.model = model


class RedrawError(Llm2PicError):
    """A reference image was to be redrawn from the LLM's description, but the LLM saw nothing.

    Raised when the backend cannot take references and no fallback backend can either, so
    nothing is left that could use the picture.
    """

    def __init__(self, message: str, *, backend: str, reason: str) -> None:
        super().__init__(
            message,
            user_message=f"绘图服务 {backend} 不支持参考图，提示词模型（LLM）也没能看图"
            f"（{reason}），请只用文字描述",
        )


UnavailableReason = Literal["no_key", "bad_key", "bad_url", "unknown", "no_endpoint", "not_gradio"]


class BackendUnavailableError(BackendError):
    """The backend is not usable as configured; ``reason`` says what to fix, ``detail`` names it."""

    templates: ClassVar[dict[UnavailableReason, str]] = {
        "no_key": "{who}未配置 api_key",
        "bad_key": "{who}的密钥含有换行等控制字符",
        "bad_url": "{who}的地址无效（需以 http:// 或 https:// 开头）",
        "unknown": "没有名为 {backend} 的绘图后端",
        "no_endpoint": "{who}没有 {detail} 接口",
        "not_gradio": "{who}不是 Gradio 应用，请检查 base_url",
    }

    def __init__(
        self,
        message: str = "",
        *,
        backend: str = "",
        service: Service = "backend",
        reason: UnavailableReason,
        detail: str = "",
    ) -> None:
        self.reason: UnavailableReason = reason
        self.detail = detail
        super().__init__(message, backend=backend, service=service)

    def _compose(self) -> str:
        fields = {"who": self.who, "backend": self.backend, "detail": self.detail}
        return self.templates[self.reason].format_map(fields).strip()


class JobTimeoutError(Llm2PicError):
    """``limits.job_timeout`` expired for the whole job."""

    user_message = "画图超时了，请稍后再试"


# --- known upstream failures ----------------------------------------------------------------------

CONTENT_POLICY_CODES = frozenset(
    {"content_policy_violation", "moderation_blocked", "sensitive_words_detected", "content_filter"}
)
"""Error codes meaning "the upstream refused this prompt" (OpenAI, DALL·E, one-api relays)."""

_KNOWN_CODES: dict[str, type[BackendStatusError]] = {
    **dict.fromkeys(CONTENT_POLICY_CODES, ContentPolicyError),
    **dict.fromkeys(
        ("insufficient_balance", "insufficient_user_quota", "credit_balance_exhausted"),
        InsufficientBalanceError,
    ),
    **dict.fromkeys(("insufficient_quota", "quota_exceeded"), QuotaExhaustedError),
    **dict.fromkeys(("model_not_found",), ModelNotFoundError),
    **dict.fromkeys(("rate_limit_exceeded", "rate_limited", "too_many_requests"), RateLimitedError),
}

_KNOWN_TEXTS: tuple[tuple[re.Pattern[str], type[BackendStatusError]], ...] = (
    (
        re.compile(
            r"safety system|content[ _]policy|content[ _]filter|moderation_blocked|flagged"
            r"|sensitive words|内容审核|敏感词",
            re.IGNORECASE,
        ),
        ContentPolicyError,
    ),
    (
        re.compile(
            r"insufficient[ _](?:balance|credits?|funds|user_quota)|credit balance"
            r"|balance is (?:too low|insufficient)|余额不足|额度不足",
            re.IGNORECASE,
        ),
        InsufficientBalanceError,
    ),
    (
        re.compile(
            r"(?:exceeded|over) (?:your|the) [\w -]{0,40}quota"
            r"|quota (?:has been )?(?:exceeded|exhausted)",
            re.IGNORECASE,
        ),
        QuotaExhaustedError,
    ),
    (
        re.compile(
            r"\bmodel\b[^.\n]{0,100}(?:does not exist|not found|not exist)|no such model"
            r"|unknown model|无可用渠道|模型不存在",
            re.IGNORECASE,
        ),
        ModelNotFoundError,
    ),
    (
        re.compile(r"rate[ _-]?limit|too many requests|请求过于频繁", re.IGNORECASE),
        RateLimitedError,
    ),
)
"""Upstream texts we translate, first match wins (OpenAI, DeepSeek, OpenRouter, one-api, HF)."""


def classify_upstream(
    code: str, message: str, status: int = 200
) -> type[BackendStatusError] | None:
    """The error class a known upstream failure maps to, from its code, text and HTTP status.

    A content-policy match counts only below 500 (a 5xx is the server's trouble, whatever it
    says); a bare 402 means payment required, a bare 429 a rate limit.
    """
    found = _KNOWN_CODES.get(code.lower()) if code else None
    if found is None:
        found = next((kind for pattern, kind in _KNOWN_TEXTS if pattern.search(message)), None)
    if found is ContentPolicyError and status >= 500:
        found = None
    if found is None and status == 402:
        found = InsufficientBalanceError
    if found is None and status == 429:
        found = RateLimitedError
    return found


class FilteredImageError(ImageError):
    """The picture came back blank: a safety checker's placeholder, i.e. a content-policy refusal.

    Never sent and, like ``ContentPolicyError``, never handed to a fallback backend.
    """

    user_message = "图片被过滤了（可能触发了安全审核），换个说法再试试"
