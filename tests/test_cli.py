"""`python -m nonebot_plugin_llm2pic draw|check|config` as a user runs them, against local fakes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import tomlkit
from PIL import Image

from .fakes.llm_server import FakeLlm
from .fakes.openai_server import FakeOpenAI, Reply, make_png


async def run_cli(workdir: Path, *args: str) -> tuple[int, str, str]:
    """Run one CLI verb in a subprocess rooted in ``workdir``; (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nonebot_plugin_llm2pic",
        *args,
        "--config",
        str(workdir / "llm2pic.toml"),
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "LOCALSTORE_USE_CWD": "true", "NO_PROXY": "*"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def write_config(workdir: Path, **tables: dict) -> None:
    document = tomlkit.document()
    document.update(tables)
    (workdir / "llm2pic.toml").write_text(tomlkit.dumps(document), "utf-8")


def openai_backend(fake: FakeOpenAI) -> dict:
    return {"openai": {"base_url": fake.base_url, "api_key": "sk-test", "retries": 0}}


async def test_draw_writes_image_and_prints_llm_prompt(tmp_path: Path):
    """`draw` sends the LLM's English prompt plus custom_prompt_add and writes the cropped image."""
    async with (
        FakeOpenAI() as images,
        FakeLlm('{"prompt": "a fluffy cat", "style": "real"}') as llm,
    ):
        images.image = make_png(100, 80, (200, 100, 50))
        write_config(
            tmp_path,
            llm={"base_url": llm.base_url, "model": "test-model"},
            routing={"default": "openai"},
            generation={
                "custom_prompt_add": "masterpiece",
                "crop_enabled": True,
                "crop_pixels": 10,
            },
            backends=openai_backend(images),
        )
        code, out, err = await run_cli(tmp_path, "draw", "画一只猫", "-o", "cat.png")
    assert code == 0, err
    assert "prompt: a fluffy cat, masterpiece" in out
    assert images.requests[-1].json["prompt"] == "a fluffy cat, masterpiece"
    assert "画一只猫" in llm.bodies[-1]["messages"][-1]["content"]
    assert Image.open(tmp_path / "cat.png").size == (100, 70)


async def test_draw_converts_to_output_extension(tmp_path: Path):
    """`-o out.jpg` writes a JPEG even when the backend answered PNG."""
    async with FakeOpenAI() as images:
        write_config(tmp_path, routing={"default": "openai"}, backends=openai_backend(images))
        code, _, err = await run_cli(tmp_path, "draw", "a cat", "--raw", "-o", "cat.jpg")
    assert code == 0, err
    assert Image.open(tmp_path / "cat.jpg").format == "JPEG"


async def test_draw_selfie_carries_appearance(tmp_path: Path):
    """`draw --selfie` gives the writer the persona's appearance."""
    async with FakeOpenAI() as images, FakeLlm() as llm:
        write_config(
            tmp_path,
            persona={"name": "小画", "appearance": "silver short hair, red eyes"},
            llm={"base_url": llm.base_url, "model": "test-model"},
            routing={"default": "openai"},
            backends=openai_backend(images),
        )
        code, _, err = await run_cli(tmp_path, "draw", "来张自拍", "--selfie", "-o", "me.png")
    assert code == 0, err
    sent = "\n".join(m["content"] for m in llm.bodies[-1]["messages"])
    assert "silver short hair, red eyes" in sent


async def test_draw_unreachable_llm_still_draws(tmp_path: Path):
    """With the LLM down, the request text is the prompt and the picture still comes."""
    async with FakeOpenAI() as images:
        write_config(
            tmp_path,
            llm={"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 5},
            routing={"default": "openai"},
            backends=openai_backend(images),
        )
        code, out, err = await run_cli(tmp_path, "draw", "画一只猫", "-o", "cat.png")
    assert code == 0, err
    assert images.requests[-1].json["prompt"] == "画一只猫"
    assert "sk-test" not in out + err


async def test_draw_failure_is_one_line_and_nonzero(tmp_path: Path):
    """An upstream 500 (after retries) ends with exit 1 and one line on stderr naming it."""
    async with FakeOpenAI() as images:
        images.replies = [Reply(status=500)] * 3
        write_config(tmp_path, routing={"default": "openai"}, backends=openai_backend(images))
        code, _, err = await run_cli(tmp_path, "draw", "a cat", "--raw", "-o", "cat.png")
    assert code == 1
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "HTTP 500" in error_lines[0]
    assert not (tmp_path / "cat.png").exists()


async def test_draw_unknown_backend(tmp_path: Path):
    """`--backend` with an unknown name fails at once, listing the enabled ones."""
    write_config(tmp_path)
    code, _, err = await run_cli(tmp_path, "draw", "a cat", "--backend", "nope")
    assert code == 1
    assert "no enabled backend named 'nope' (enabled: openai, zimage)" in err


async def test_check_reports_each_probe(tmp_path: Path):
    """`check` prints a row per probe and fails when a routed backend's key is rejected."""
    async with FakeOpenAI() as images, FakeLlm() as llm:
        backends = openai_backend(images)
        backends["openai"]["api_key"] = "sk-wrong"
        write_config(
            tmp_path,
            llm={"base_url": llm.base_url, "model": "test-model"},
            routing={"default": "openai"},
            backends={**backends, "zimage": {"enabled": False}},
        )
        code, out, _ = await run_cli(tmp_path, "check")
    rows = {
        line.split()[0] + (" " + line.split()[1] if line.startswith("backend") else ""): line
        for line in out.splitlines()
    }
    assert code == 1
    assert " ok " in rows["config"]
    assert " ok " in rows["LLM"]
    assert "test-model listed" in rows["LLM"]
    assert "FAILED" in rows["backend openai"]
    assert "认证失败" in rows["backend openai"]
    assert "sk-wrong" not in out


async def test_check_passes_with_healthy_setup(tmp_path: Path):
    """All probes ok → exit 0; an unconfigured, unrouted backend is 'unused', not a failure."""
    async with FakeOpenAI() as images:
        write_config(
            tmp_path,
            routing={"default": "openai"},
            backends={
                **openai_backend(images),
                "zimage": {"enabled": False},
                "spare": {"type": "openai", "base_url": images.base_url},
            },
        )
        code, out, err = await run_cli(tmp_path, "check")
    assert code == 0, out + err
    assert "unused" in next(line for line in out.splitlines() if line.startswith("backend spare"))


async def test_check_invalid_config(tmp_path: Path):
    """An invalid file makes `check` exit 1 naming the key."""
    (tmp_path / "llm2pic.toml").write_text("[limits]\nmax_queue = 'many'\n", "utf-8")
    code, _, err = await run_cli(tmp_path, "check")
    assert code == 1
    assert "limits.max_queue" in err


async def test_config_set_and_get_roundtrip(tmp_path: Path):
    """`config set` converts and validates like the chat command; `config get` reads it back."""
    code, out, _ = await run_cli(tmp_path, "config", "set", "persona.name", "1999")
    assert code == 0
    assert 'persona.name = "1999"' in out
    code, out, _ = await run_cli(tmp_path, "config", "get", "persona.name")
    assert (code, out.strip()) == (0, '"1999"')
    before = (tmp_path / "llm2pic.toml").read_bytes()
    code, _, err = await run_cli(tmp_path, "config", "set", "limits.max_queue", "lots")
    assert code == 1
    assert "limits.max_queue: 应为整数" in err
    assert (tmp_path / "llm2pic.toml").read_bytes() == before


async def test_draw_with_local_reference_image(tmp_path: Path):
    """`draw --image PATH` reads the local file and sends it to images/edits as the reference."""
    reference = make_png(24, 24, (5, 6, 7))
    (tmp_path / "ref.png").write_bytes(reference)
    async with FakeOpenAI() as images:
        write_config(tmp_path, routing={"default": "openai"}, backends=openai_backend(images))
        code, out, err = await run_cli(
            tmp_path, "draw", "画成动漫风", "--image", "ref.png", "-o", "out.png"
        )
    assert code == 0, err
    assert "backend: openai" in out
    [edit] = images.requests
    assert edit.path == "/v1/images/edits"
    assert [p.data for p in edit.parts if p.name == "image[]"] == [reference]


async def test_draw_reference_unsupported_fails_before_drawing(tmp_path: Path):
    """`draw --image` on a backend without reference support fails at once and draws nothing."""
    (tmp_path / "ref.png").write_bytes(make_png(8, 8, (1, 1, 1)))
    write_config(tmp_path, routing={"default": "zimage"})
    code, _, err = await run_cli(tmp_path, "draw", "画成油画", "--image", "ref.png")
    assert code == 1
    assert "不支持参考图" in err
    assert not (tmp_path / "out.png").exists()


async def test_draw_several_writes_numbered_files(tmp_path: Path):
    """`draw … -n 3 -o out.png` writes out-1.png, out-2.png and out-3.png."""
    async with FakeOpenAI() as images:
        images.honours_n = True
        write_config(tmp_path, routing={"default": "openai"}, backends=openai_backend(images))
        code, out, err = await run_cli(
            tmp_path, "draw", "a cat", "--raw", "-n", "3", "-o", "out.png"
        )
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("out*.png")) == [
        "out-1.png",
        "out-2.png",
        "out-3.png",
    ]
    assert [r.json["n"] for r in images.requests] == [3]
    assert out.count("wrote ") == 3
