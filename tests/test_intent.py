"""Intent detection on real-looking group messages: kind, explicit, subject, aspect."""

# Real chat messages use full-width punctuation and letters; that is what these tests feed in.

from __future__ import annotations

import pytest

from nonebot_plugin_llm2pic.intent import Intent, aspect_hint, detect_intent, points_at_picture

DRAW, SELFIE, NEGATIVE, NONE = "draw", "selfie", "negative", "none"

CASES = [
    # explicit drawing requests
    ("画一张猫咪的图片", DRAW, True),
    ("帮我画个日落", DRAW, True),
    ("画只柴犬", DRAW, True),
    ("再画一张", DRAW, True),
    ("再来一张", DRAW, True),
    ("帮我画一只在雨中奔跑的狗", DRAW, True),
    ("给我画一个赛博朋克风格的城市夜景", DRAW, True),
    ("能不能画一只戴帽子的企鹅", DRAW, True),
    ("可以帮我画一幅山水画吗", DRAW, True),
    ("生成一张星空下的城堡图", DRAW, True),
    ("帮我生成一只机械猫", DRAW, True),
    ("来张猫猫的图片", DRAW, True),
    ("求一张初音未来的壁纸", DRAW, True),
    ("来一张赛博朋克城市", DRAW, True),
    ("帮我画风景", DRAW, True),
    ("快画一只恐龙", DRAW, True),
    ("小画，画一只猫", DRAW, True),
    ("给大家画一张全家福", DRAW, True),
    ("画一张你在海边的样子", DRAW, True),
    ("画一只猫，不要画背景", DRAW, True),
    ("ｄｒａｗ ｍｅ ａ ｃａｔ", DRAW, True),
    ("draw me a cat", DRAW, True),
    ("Draw a dragon flying over mountains", DRAW, True),
    ("can you draw a sunset please", DRAW, True),
    ("generate a picture of a sunset over the sea", DRAW, True),
    ("Could you paint me a picture of a castle", DRAW, True),
    ("can you make me an image of a red fox", DRAW, True),
    # weak hints: fire only when addressed to the bot or confirmed by the judge
    ("我想看看樱花的样子", DRAW, False),
    ("想看看樱花", DRAW, False),
    ("发张图", DRAW, False),
    ("来张图", DRAW, False),
    ("来一张图片", DRAW, False),
    ("show me a cute puppy", DRAW, False),
    ("send me a picture of a cat", DRAW, False),
    # selfies
    ("来张自拍", SELFIE, True),
    ("自拍一张嘛", SELFIE, True),
    ("想看你的自拍", SELFIE, True),
    ("画一张你自己", SELFIE, True),
    ("send me a selfie", SELFIE, True),
    ("take a selfie please", SELFIE, True),
    ("draw yourself", SELFIE, True),
    ("自拍", SELFIE, False),
    ("自拍？", SELFIE, False),
    ("发张照片看看", SELFIE, False),
    ("你在干嘛呀，发张图看看", SELFIE, False),
    ("你在哪呢，拍张照片看看", SELFIE, False),
    ("发张你的照片", SELFIE, False),
    ("想看看你", SELFIE, False),
    ("selfie", SELFIE, False),
    ("send a pic of yourself", SELFIE, False),
    # negative intent
    ("别画", NEGATIVE, True),
    ("不要图", NEGATIVE, True),
    ("不用画了", NEGATIVE, True),
    ("别画了，没意思", NEGATIVE, True),
    ("不用再画一张了", NEGATIVE, True),
    ("别发自拍了", NEGATIVE, True),
    ("图就不用了", NEGATIVE, True),
    ("不想看图了", NEGATIVE, True),
    ("don't draw anything", NEGATIVE, True),
    ("stop drawing", NEGATIVE, True),
    ("no more pictures please", NEGATIVE, True),
    # chatter about pictures
    ("这张图真好看", NONE, False),
    ("画得不错", NONE, False),
    ("我在画画", NONE, False),
    ("图片加载不出来", NONE, False),
    ("他画的好丑", NONE, False),
    ("画图软件哪个好", NONE, False),
    ("你画的猫好可爱", NONE, False),
    ("我也想画画", NONE, False),
    ("学画画好难", NONE, False),
    ("他帮我画了一只猫", NONE, False),
    ("我再画一张", NONE, False),
    ("我发张图给你们看", NONE, False),
    ("我的自拍好丑", NONE, False),
    ("这张自拍拍得不错", NONE, False),
    ("自拍杆坏了", NONE, False),
    ("我自拍了一下", NONE, False),
    ("昨天去看了画展", NONE, False),
    ("这画风好可爱", NONE, False),
    ("生成的图片好奇怪", NONE, False),
    ("AI生成图片的速度好快", NONE, False),
    ("图片生成失败了", NONE, False),
    ("哈哈哈这图笑死我了", NONE, False),
    ("你会画画吗", NONE, False),
    ("今天天气不错", NONE, False),
    ("I love drawing", NONE, False),
    ("who drew this", NONE, False),
    ("this picture looks great", NONE, False),
    ("the image won't load", NONE, False),
    ("I'm drawing right now", NONE, False),
    ("", NONE, False),
]


@pytest.mark.parametrize(("text", "kind", "explicit"), CASES)
def test_detect_intent(text: str, kind: str, explicit: bool) -> None:
    """Each message gets the expected kind and explicit flag."""
    intent = detect_intent(text)
    assert (intent.kind, intent.explicit) == (kind, explicit)


@pytest.mark.parametrize(
    ("text", "subject"),
    [
        ("画一张猫咪的图片", "猫咪"),
        ("帮我画个日落吧", "日落"),
        ("画两只猫", "两只猫"),
        ("可以帮我画一幅山水画吗", "山水画"),
        ("生成一张星空下的城堡图", "星空下的城堡"),
        ("来张猫猫的图片", "猫猫"),
        ("我想看看樱花的样子", "樱花"),
        ("画图 一只猫", "一只猫"),
        ("draw me a cat", "a cat"),
        ("can you draw a sunset please", "a sunset"),
        ("generate a picture of a sunset over the sea", "a sunset over the sea"),
    ],
)
def test_subject_strips_trigger_words(text: str, subject: str) -> None:
    """The subject is the request without its trigger words."""
    assert detect_intent(text).subject == subject


@pytest.mark.parametrize("text", ["再画一张", "来张自拍", "别画", "这张图真好看"])
def test_subject_falls_back_to_text(text: str) -> None:
    """When nothing sensible is left after stripping, the subject is the whole text."""
    assert detect_intent(text).subject == text


def test_intent_is_frozen() -> None:
    """Intent is an immutable value object."""
    intent = detect_intent("画一只猫")
    assert intent == Intent("draw", True, "猫")
    with pytest.raises(AttributeError):
        intent.kind = "none"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "aspect"),
    [
        ("画一张横图，海边日落", "landscape"),
        ("来张宽屏的星空", "landscape"),
        ("画一张电脑壁纸", "landscape"),
        ("生成一张16:9的城市夜景图", "landscape"),
        ("帮我画张竖图", "portrait"),
        ("帮我画张手机壁纸，星空", "portrait"),
        ("画一张9：16的海报", "portrait"),
        ("画一张方图", "square"),
        ("给我画个头像", "square"),
        ("画一张1比1的猫", "square"),
        ("draw a landscape picture of a lake", "landscape"),
        ("draw me a portrait of a knight", "portrait"),
        ("a square icon please", "square"),
        ("画一只猫", None),
        ("10:30 画一只钟", None),
        ("竖图，不要横图", "portrait"),
    ],
)
def test_aspect_hint(text: str, aspect: str | None) -> None:
    """Shape words and ratios map to square / landscape / portrait; the first one named wins."""
    assert aspect_hint(text) == aspect


@pytest.mark.parametrize(
    ("text", "has_image", "kind"),
    [
        ("画成动漫风格", True, "draw"),
        ("把它改成油画", True, "draw"),
        ("make it anime style", True, "draw"),
        ("画成动漫风格", False, "none"),
        ("别画成这样", True, "negative"),
        ("这张图真好看", True, "none"),
        ("按这张图的风格画一只猫", True, "draw"),
        ("照着这张画一个", True, "draw"),
        ("按这张图的风格画一只猫", False, "none"),
        ("你也来一张这样的", True, "selfie"),
        ("你们也来一张这样的", True, "draw"),
    ],
)
def test_edit_instruction_with_image(text, has_image, kind):
    """An edit instruction is an explicit request only when an image comes with it."""
    intent = detect_intent(text, has_image=has_image)
    assert intent.kind == kind
    assert intent.explicit == (kind != "none")


@pytest.mark.parametrize(
    ("text", "points"),
    [
        ("画一只这种颜色的猫", True),
        ("照着刚才的图画", True),
        ("来个同款", True),
        ("上面的图再画一遍", True),
        ("画一只猫", False),
        ("这样画", False),
    ],
)
def test_points_at_picture(text, points):
    """Only words that point at a picture offer chat pictures to the LLM."""
    assert points_at_picture(text) is points
