"""nonebot-plugin-llm2pic: the group asks in plain words, the bot draws.

Thin entry layer: metadata, and — only when NoneBot's plugin loader executes this module — the
``require`` of localstore and the matchers. ``python -m nonebot_plugin_llm2pic`` imports this
package before ``nonebot.init()``; the guard keeps that import free of NoneBot side effects, and
``serve`` then loads the plugin for real (see ``__main__``).
"""

from nonebot.plugin import PluginMetadata, get_plugin_by_module_name, require

from .config import Config

__plugin_meta__ = PluginMetadata(
    name="LLM 画图",
    description=(
        "群友用一句话要图，LLM 结合聊天记录与人设写提示词，Gradio/OpenAI 后端画图并发回群里"
    ),
    usage=(
        "画图：直接说“画一张猫咪的图片”“帮我画个日落”，或 /pic <描述>\n"
        "自拍：“来张自拍”“发张照片看看”\n"
        "参考图：发图或回复一张图并说“画成动漫风”\n"
        "/pic -r <提示词> 不经 LLM 直接画；/pic -b <后端> 指定后端（默认仅超管）\n"
        "管理：/llm2pic show|get|set|unset|reload|status|on|off\n"
        "本群设置：/llm2pic group show|get|set|unset（群主/管理员可改人设与触发开关）"
    ),
    type="application",
    homepage="https://github.com/llm2pic/nonebot-plugin-llm2pic",
    config=Config,
    supported_adapters={"~onebot.v11"},
)

if get_plugin_by_module_name(__name__) is not None:  # executed by NoneBot's plugin loader
    from .log import bridge_to_nonebot

    bridge_to_nonebot()  # library modules log to the stdlib; from here on into NoneBot's log
    require("nonebot_plugin_localstore")

    from . import matchers as matchers
