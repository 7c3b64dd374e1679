"""`check` lists the persona reference images it found; none of them fails the check."""

from __future__ import annotations

from pathlib import Path

from .fakes.openai_server import FakeOpenAI, make_png
from .test_cli import openai_backend, run_cli, write_config


async def test_check_lists_persona_images(tmp_path: Path):
    """Each persona image gets a row: found files with their size, missing ones skipped, URLs."""
    (tmp_path / "persona").mkdir()
    face = make_png(16, 16, (200, 40, 40))
    (tmp_path / "persona" / "face.png").write_bytes(face)
    async with FakeOpenAI() as images:
        write_config(
            tmp_path,
            persona={
                "reference_images": ["persona/face.png", "gone.png", "https://example.com/me.png"]
            },
            routing={"default": "openai"},
            backends={**openai_backend(images), "zimage": {"enabled": False}},
        )
        code, out, err = await run_cli(tmp_path, "check")
    rows = [line for line in out.splitlines() if line.startswith("persona image")]
    assert code == 0, out + err
    assert rows[0].split()[3:] == [
        "ok",
        f"{tmp_path / 'persona' / 'face.png'},",
        str(len(face)),
        "bytes",
    ]
    assert rows[1].split()[3:5] == ["skipped", f"{tmp_path / 'gone.png'}:"]
    assert rows[2].split()[3:5] == ["ok", "https://example.com/me.png"]
