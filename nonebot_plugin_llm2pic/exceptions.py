"""One error hierarchy; every error carries a short Chinese ``user_message`` for the chat.

Matchers and the CLI are the only places that catch broadly; they show ``user_message``.
``str(err)`` is the English admin/log text and never contains secrets or base64 payloads.
"""

from __future__ import annotations

from .retry import RETRYABLE_STATUSES


class Llm2PicError(Exception):
    """Base of every error this plugin raises on purpose."""

    user_message: str = "出错了，请稍后再试"

    def __init__(self, message: str = "", *, user_message: str | None = None) -> None:
        super().__init__(message or self.user_message)
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
    """A backend failed. ``retryable`` and ``fallback`` steer the retry loop and routing."""

    user_message = "绘图服务出错"
    retryable: bool = False
    fallback: bool = True

    def __init__(self, message: str = "", *, backend: str = "", user_message: str | None = None):
        super().__init__(message, user_message=user_message)
        self.backend = backend


class BackendStatusError(BackendError):
    """The upstream answered with an HTTP error status; ``body`` is a short excerpt."""

    def __init__(
        self,
        message: str = "",
        *,
        backend: str = "",
        status: int,
        body: str = "",
        retry_after: float | None = None,
        user_message: str | None = None,
    ) -> None:
        super().__init__(
            message or f"HTTP {status}: {body[:200]}",
            backend=backend,
            user_message=user_message or f"绘图服务 {backend} 出错（HTTP {status}）",
        )
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.retryable = status in RETRYABLE_STATUSES


class BackendAuthError(BackendStatusError):
    """401/403: the backend is unusable with this key; not retried, fallback allowed."""


class ContentPolicyError(BackendStatusError):
    """The upstream refused the prompt; never retried and never sent to a fallback."""

    fallback = False


class BackendConnectionError(BackendError):
    """Could not connect, or the connection dropped before a response."""

    retryable = True


class BackendTimeoutError(BackendError):
    """A connect, idle-read or total timeout expired."""

    retryable = True


class StreamError(BackendError):
    """A stream was cut or malformed before a complete image arrived."""

    user_message = "生成中断，请稍后再试"
    retryable = True


class UpstreamError(BackendError):
    """The upstream reported a failure in-band (Gradio ``error`` event, chat ``finish_reason``)."""


class ResponseTooLargeError(BackendError):
    """A body or image exceeded its cap; rejected without reading it all."""


class ReferencesUnsupportedError(BackendError):
    """The backend cannot take reference images; routing may try a fallback that can."""


class BackendUnavailableError(BackendError):
    """The backend is not usable as configured (e.g. it needs an api_key that is empty)."""


class JobTimeoutError(Llm2PicError):
    """``limits.job_timeout`` expired for the whole job."""

    user_message = "画图超时了，请稍后再试"


class FilteredImageError(ImageError):
    """The picture came back blank: a safety checker's placeholder, i.e. a content-policy refusal.

    Never sent and, like ``ContentPolicyError``, never handed to a fallback backend.
    """

    user_message = "图片被过滤了（可能触发了安全审核），换个说法再试试"
