"""Drawing intent in plain group messages: draw, selfie, negative, or nothing.

Pure and regex based, Chinese and English. A match is *explicit* when the message is written as
a request ("画一张…", "帮我画…", "来张自拍", "draw me…") and *weak* when it only hints at one
("想看看樱花", "发张图", "send a pic of yourself"); the matcher fires weak ones only when the
message is addressed to the bot or the LLM judge confirms it. Talk *about* pictures ("这张图真好看",
"他画的好丑", "画图软件哪个好") is "none". A refusal ("别画", "don't draw") is "negative" unless an
explicit request comes before it in the same message ("画一只猫, 不要画背景").
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

IntentKind = Literal["draw", "selfie", "negative", "none"]
AspectHint = Literal["square", "landscape", "portrait"]
StyleHint = Literal["anime", "real"]


@dataclass(frozen=True)
class Intent:
    """What a message asks for.

    ``explicit`` tells a clear request from a hint (always True for "negative", False for "none").
    ``subject`` is the request with the trigger words stripped ("帮我画个日落" → "日落"), or the
    whole text when nothing sensible is left.
    """

    kind: IntentKind
    explicit: bool
    subject: str


_F = re.IGNORECASE

# Clause separators (after NFKC, full-width commas, colons, ! and ? are ASCII already).
_SEP = r"\s,.!?~:;'\"()\[\]、。…【】「」《》\u201c\u201d\u2018\u2019"
_START = rf"(?:^|(?<=[{_SEP}]))"
_IMG = r"(?:图片|图|照片|相片|插画|壁纸|头像|美图|表情包|画)"
_PHOTO = r"(?:照片|相片|近照|生活照|照)"
_NUM = r"(?:一|1|两|2|几|三|3)"
_CLS = r"(?:张|幅|副|个|只|条|位|头|匹|朵|棵|座|片|份|套|组)"
# Words that turn a following 画 into a request. The look-behind keeps "我再画一张" and
# "他帮我画" (someone else drawing) out.
_ASK = (
    r"(?<![我他她它们])(?:再|重新|(?:帮|给|替|为)(?:我们|我|大家|群友|咱们|咱)?|帮忙|请|麻烦|"
    r"求|快|你|能不能|可不可以|可以|能否|能|顺便|赶紧|马上)"
)
# 画 followed by these is talk about drawing (画得/画的/画了/画画/画家/画风/画面/画图软件…).
_NOT_A_REQUEST = (
    r"(?!得|的|了|过|着|完|画|家|师|作|展|册|廊|板|笔|布|室|法|技|质|风(?!景)|面(?!包|条)"
    r"|图(?:软件|工具|app))"
)
_EN_OBJECT = (
    r"(?:me|us|a|an|some|the|another|one|two|three|\d+|my|his|her|our|this|that|these|those|"
    r"something|him|them|it|cute|beautiful)\b"
)

# --- negative -----------------------------------------------------------------------------------
_NEGATIVE = [
    re.compile(
        r"(?:别|不要|不用|不必|甭|不许|不准|禁止|停止|不需要|不想要|没让你|谁让你|没叫你|不是让你)"
        r"\s*(?:再|给我|帮我|又|乱|瞎|随便)?\s*"
        r"(?:画|绘制|发图|发图片|出图|生成|发照片|发自拍|自拍|来图|图片|图|照片)",
        _F,
    ),
    re.compile(r"不想看\s*(?:图|图片|照片|自拍)", _F),
    re.compile(r"(?:图|画|自拍)\s*(?:就|先)?\s*(?:不用|不要|算)了", _F),
    re.compile(
        r"\b(?:don'?t|do not|dont|stop|no need to|never|quit)\s+(?:\w+\s+)?"
        r"(?:draw|drawing|paint|painting|generat\w*|"
        r"send\w*\s+(?:\w+\s+)?(?:pics?|pictures?|images?|photos?|selfies?))\b",
        _F,
    ),
    re.compile(r"\bno (?:more )?(?:images?|pictures?|pics?|drawings?|selfies?|photos?)\b", _F),
]

# --- selfie -------------------------------------------------------------------------------------
_SELFIE_EXPLICIT = [
    re.compile(
        r"(?<![我他她它])(?:来|发|拍|整|求|给我|要|看看|想看|再来|再发|出)\s*(?:一|1)?\s*"
        r"(?:张|个|下)?\s*(?:你的)?\s*自拍",
        _F,
    ),
    re.compile(r"(?<![我他她它])自拍\s*(?:一|1)?\s*(?:张|个|下)", _F),
    re.compile(
        r"(?:画|绘制)\s*(?:一|1)?\s*(?:张|幅|个)?\s*(?:你自己|你的自画像|自画像|你本人|你的自拍)",
        _F,
    ),
    re.compile(
        r"\b(?:send|take|post|show|give|snap|share)\s+(?:me\s+|us\s+)?"
        r"(?:a|an|another|one|your)?\s*selfie",
        _F,
    ),
    re.compile(r"\bselfie\s+(?:please|pls|plz|time)\b", _F),
    re.compile(r"\bdraw\s+(?:(?:a|an)\s+(?:picture|pic|image|portrait)\s+of\s+)?yourself\b", _F),
]
_SELFIE_BARE = re.compile(
    r"^(?:你的?)?自拍(?:照)?(?:呢|吗|嘛|呀|啊|吧)?$|^(?:a |your )?selfies?$", _F
)
_ABOUT_YOU = re.compile(
    r"^(?:你|you|yourself)(?!们)(?:的?(?:样子|模样|长相|照片|近照|真容|脸)|长(?:什么|啥)样|本人|"
    r"现在的样子|r (?:face|look))?$|^what you look like$",
    _F,
)
_PIC_OF_YOU = re.compile(
    r"\b(?:pics?|pictures?|photos?|images?)\s+of\s+(?:you|yourself)\b"
    r"|\bwhat (?:do )?you look like\b",
    _F,
)
_YOU_ZH = re.compile(r"你(?!们)")

# --- draw, explicit -----------------------------------------------------------------------------
_DRAW_ASKED = re.compile(rf"{_ASK}\s*(?:画出|绘制|画){_NOT_A_REQUEST}(?P<rest>.*)", _F)
_DRAW_BARE = re.compile(
    rf"{_START}(?:画出|绘制|画)(?=\s*{_NUM}|{_CLS}|\s|:|一下|图\s*[\s:])(?P<rest>.*)", _F
)
_GENERATE = re.compile(
    rf"(?:{_START}|{_ASK})\s*(?:生成|制作|做|整)(?![的了过得])"
    rf"(?:(?P<subj>[^{_SEP}]{{0,24}}?){_IMG}|(?=\s*{_NUM}\s*{_CLS})(?P<rest>.*))",
    _F,
)
# 来/发/求 + a classifier + a subject + a picture word: "来张猫猫的图片". Without a subject
# ("来张图", "发张照片") or without a classifier ("求原图") it is only a hint.
_FETCH = re.compile(
    rf"(?<![我他她它])(?:给我来|给我发|再来|再发|来|发|整|求|拍)\s*(?P<num>{_NUM})?\s*"
    rf"(?P<cls>{_CLS})?(?P<subj>[^{_SEP}]{{0,24}}?)(?P<img>{_IMG}|{_PHOTO})",
    _F,
)
_FETCH_SCENE = re.compile(
    rf"(?<![我他她它])(?:再来|来|整|求)\s*{_NUM}\s*(?:张|幅)(?P<subj>[^{_SEP}]{{2,24}})", _F
)
_AGAIN = re.compile(rf"再\s*(?:来|整|发)\s*{_NUM}?\s*(?:{_CLS}|次)", _F)
_EN_DRAW = re.compile(
    r"(?:^|(?<=[,.!?:;])|\b(?:please|pls|plz|you|u|now|then|again|and)\s+)\s*"
    rf"(?:draw|paint|sketch|illustrate)\s+(?P<rest>{_EN_OBJECT}.*)",
    _F,
)
_EN_GENERATE = re.compile(
    r"(?<!\bi )(?<!\bwe )(?<!\bhe )(?<!\bshe )(?<!\bthey )"
    r"\b(?:generate|create|make|render|draw|paint)\s+(?:me\s+|us\s+)?(?:a|an|another|one|some)\s+"
    r"(?:picture|image|pic|photo|drawing|painting|illustration|wallpaper|artwork|avatar)s?\b"
    r"(?:\s+of\b)?(?P<rest>.*)",
    _F,
)

# --- draw, weak ---------------------------------------------------------------------------------
_WANT_TO_SEE = re.compile(
    r"(?<!不)想要?\s*(?:看看|看一看|看一下|看下|瞧瞧|康康|见识一下|看)(?P<rest>.*)", _F
)
_EN_WANT_TO_SEE = re.compile(
    r"\b(?:show me|i want to see|i wanna see|i'd like to see|i would like to see|can i see|"
    r"let me see)\s+(?P<rest>.+)",
    _F,
)
_EN_SEND_PIC = re.compile(
    r"\b(?:send|post|give)\s+(?:me\s+|us\s+)?(?:a|an|some|another)?\s*"
    r"(?:pics?|pictures?|photos?|images?)\b(?:\s+of\s+(?P<rest>.+))?",
    _F,
)

# --- subject cleanup ----------------------------------------------------------------------------
_LEADING_MEASURE = re.compile(
    # "一只猫" → "猫", but "两只猫" keeps its number.
    rf"^\s*(?:(?:一|1)?\s*(?:张|幅|副|个|只|条|位|头|匹|份)|一下|下|图(?=[{_SEP}]))\s*"
)
_LEADING_EN = re.compile(
    r"^(?:(?:me|us)\s+)?(?:(?:a|an|some|another|one)\s+(?:picture|image|pic|photo|drawing|"
    r"painting|illustration)s?\s+of\s+)?",
    _F,
)
_TRAILING_NOISE = re.compile(
    rf"(?:的(?:样子|画)|的?(?:图片|图|照片|插画|壁纸)|的|[{_SEP}]|吧|呗|呀|啊|吗|嘛|哦|哈|好吗|可以吗|行吗|"
    r"谢谢|谢啦|\bplease|\bpls|\bplz|\bthanks?|\bthank you)+$",
    _F,
)
_EDGE_SEP = re.compile(rf"^[{_SEP}]+|[{_SEP}]+$")


_EDIT = re.compile(
    r"(?:画|改|变|转|换|弄|p|修)\s*成|风格化|上色|make\s+(?:it|this)|turn\s+(?:it|this)\s+into"
    rf"|(?:照着|(?:按照?|参考|仿照)\s*(?:这|那))[^{_SEP}]{{0,12}}?画",
    _F,
)
# With a picture: the bot is asked for one like it (「你也来一张这样的」).
_SELFIE_LIKE = re.compile(
    r"你(?!们)\s*也?\s*(?:来|画|拍|整|发)\s*(?:一|1)?\s*(?:张|个|下)?\s*(?:这样|这种|同款|一样)", _F
)


def detect_intent(text: str, *, has_image: bool = False) -> Intent:
    """Classify one group message: draw / selfie / negative / none, explicit or weak.

    ``has_image``: the message carries or replies to an image, so an edit instruction such as
    "画成动漫风格" / "make it anime" / "照着这张画…" is an explicit request with that image as
    reference, and "你也来一张这样的" a selfie like it.
    """
    text = _normalize(text)
    if not text:
        return Intent("none", False, "")
    if has_image and _first(_NEGATIVE, text) is None:
        if _SELFIE_LIKE.search(text):
            return Intent("selfie", True, text)
        if _EDIT.search(text):
            return Intent("draw", True, text)
    negative = _first(_NEGATIVE, text)
    selfie = _first(_SELFIE_EXPLICIT, text)
    draw, subject = _explicit_draw(text)
    positive = min((m.start() for m in (selfie, draw) if m is not None), default=None)
    if negative is not None and (positive is None or negative.start() <= positive):
        return Intent("negative", True, text)
    if selfie is not None:
        return Intent("selfie", True, text)
    if draw is not None:
        return Intent("draw", True, subject or text)
    return _weak(text)


def _explicit_draw(text: str) -> tuple[re.Match[str] | None, str]:
    """The earliest explicit drawing request and its subject."""
    found: list[tuple[int, re.Match[str], str]] = []
    for pattern in (_DRAW_ASKED, _DRAW_BARE, _GENERATE, _EN_DRAW, _EN_GENERATE):
        match = pattern.search(text)
        if match:
            subject = match.group("subj") if "subj" in match.groupdict() else None
            found.append((match.start(), match, _clean_subject(subject or match["rest"] or "")))
    fetches = [m for m in _FETCH.finditer(text) if m["cls"]] + [*_FETCH_SCENE.finditer(text)]
    for match in fetches:
        subject = _clean_subject(match["subj"])
        if subject and not _ABOUT_YOU.match(subject):
            found.append((match.start(), match, subject))
    again = _AGAIN.search(text)
    if again:
        found.append((again.start(), again, ""))
    if not found:
        return None, ""
    _, match, subject = min(found, key=lambda item: item[0])
    return match, subject


def _weak(text: str) -> Intent:
    """Hints: "想看看樱花", "发张图", "发张照片看看", "你在干嘛, 发张图", "show me a cat"."""
    if _SELFIE_BARE.match(_EDGE_SEP.sub("", text)) or _PIC_OF_YOU.search(text):
        return Intent("selfie", False, text)
    fetch = _FETCH.search(text)
    if fetch:
        subject = _clean_subject(fetch["subj"])
        if not subject or _ABOUT_YOU.match(subject):
            # A bare photo is a photo of the bot; so is any bare picture asked of "你".
            if re.fullmatch(_PHOTO, fetch["img"]) or subject or _YOU_ZH.search(text):
                return Intent("selfie", False, text)
            return Intent("draw", False, text)
        return Intent("draw", False, subject)
    for pattern in (_WANT_TO_SEE, _EN_WANT_TO_SEE):
        match = pattern.search(text)
        if match:
            subject = _clean_subject(match["rest"])
            if _ABOUT_YOU.match(subject):
                return Intent("selfie", False, text)
            if subject:
                return Intent("draw", False, subject)
    match = _EN_SEND_PIC.search(text)
    if match:
        return Intent("draw", False, _clean_subject(match["rest"] or "") or text)
    return Intent("none", False, text)


def _clean_subject(subject: str) -> str:
    subject = _EDGE_SEP.sub("", subject.strip())
    subject = _LEADING_MEASURE.sub("", subject)
    subject = _LEADING_EN.sub("", subject)
    subject = _TRAILING_NOISE.sub("", subject)
    return _EDGE_SEP.sub("", subject).strip()


def _first(patterns: list[re.Pattern[str]], text: str) -> re.Match[str] | None:
    matches = [m for m in (p.search(text) for p in patterns) if m is not None]
    return min(matches, key=lambda m: m.start(), default=None)


def _normalize(text: str) -> str:
    # NFKC folds full-width letters and punctuation into ASCII.
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _ratios(*ratios: str) -> str:
    """Regex for "16:9" or "16比9", not inside a longer number (NFKC made colons ASCII)."""
    parts = (r"\s*(?::|比)\s*".join(ratio.split(":")) for ratio in ratios)
    return rf"(?<!\d)(?:{'|'.join(parts)})(?!\d)"


_ASPECTS: list[tuple[AspectHint, re.Pattern[str]]] = [
    (
        "landscape",
        re.compile(
            r"横图|横版|横屏|横向|横幅|宽屏|宽幅|宽图|电脑壁纸|桌面壁纸|"
            rf"{_ratios('16:9', '4:3', '3:2', '21:9', '2:1')}|"
            r"\blandscape\b|\bwide ?screen\b|\bhorizontal\b|\bdesktop wallpaper\b",
            _F,
        ),
    ),
    (
        "portrait",
        re.compile(
            r"竖图|竖版|竖屏|竖向|竖幅|手机壁纸|立绘|"
            rf"{_ratios('9:16', '3:4', '2:3', '1:2')}|"
            r"\bportrait\b|\bvertical\b|\b(?:phone|mobile) wallpaper\b",
            _F,
        ),
    ),
    (
        "square",
        re.compile(
            rf"方图|正方形|方形|方版|头像|{_ratios('1:1')}|"
            r"\bsquare\b|\bavatar\b|\bprofile pic",
            _F,
        ),
    ),
]


def aspect_hint(text: str) -> AspectHint | None:
    """The picture shape a message asks for (横图/竖图/方图/手机壁纸/16:9/"landscape"…), if any.

    When several are named, the first one in the text wins.
    """
    text = _normalize(text)
    hits: list[tuple[int, AspectHint]] = [
        (m.start(), kind) for kind, pattern in _ASPECTS if (m := pattern.search(text))
    ]
    return min(hits)[1] if hits else None


_STYLES: list[tuple[StyleHint, re.Pattern[str]]] = [
    ("anime", re.compile(r"动漫|二次元|\banime\b|\bmanga\b", _F)),
    ("real", re.compile(r"写实|照片|真人|\brealistic\b|\bphoto", _F)),
]


def style_hint(text: str) -> StyleHint | None:
    """The style a message names (动漫/二次元 → anime, 写实/照片 → real), if any.

    When both are named the last one wins: the target style follows the source
    (「把这张照片画成动漫风」 asks for anime).
    """
    text = _normalize(text)
    hits: list[tuple[int, StyleHint]] = [
        (m.start(), kind) for kind, pattern in _STYLES if (m := pattern.search(text))
    ]
    return max(hits)[1] if hits else None


_POINTS_AT_PICTURE = re.compile(r"这张|那张|刚才的图|上面的图|这种|同款|照着")


def points_at_picture(text: str) -> bool:
    """Whether a request points at a picture in the chat (这张, 那张, 刚才的图, 同款, 照着…)."""
    return bool(_POINTS_AT_PICTURE.search(_normalize(text)))
