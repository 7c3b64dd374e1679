"""The plugin loads the way the NoneBot store test loads it: fresh env, no driver, no config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

STORE_TEST = """
import json, nonebot
from pydantic import BaseModel
nonebot.init(driver="~none")
plugin = nonebot.load_plugin("nonebot_plugin_llm2pic")
assert plugin is not None, "plugin did not load"
meta = plugin.metadata
assert meta is not None and issubclass(meta.config, BaseModel)
print(json.dumps({"name": meta.name, "type": meta.type, "homepage": meta.homepage,
                  "adapters": sorted(meta.supported_adapters or []),
                  "matchers": len(plugin.matcher)}))
"""


def test_loads_with_no_config_and_no_driver(tmp_path: Path):
    """A fresh HOME and no config file: the plugin loads, creates its config, has metadata."""
    result = subprocess.run(
        [sys.executable, "-c", STORE_TEST],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={
            "HOME": str(tmp_path),
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        },
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    meta = json.loads(result.stdout.strip().splitlines()[-1])
    assert meta == {
        "name": "LLM 画图",
        "type": "application",
        "homepage": "https://github.com/llm2pic/nonebot-plugin-llm2pic",
        "adapters": ["~onebot.v11"],
        "matchers": 3,
    }
    assert list(tmp_path.rglob("llm2pic.toml")), "the example config was not created"
