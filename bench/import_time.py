"""Import cost of the plugin on top of NoneBot itself, in fresh interpreters (budget ≤ 300 ms).

Three figures, each the median (min–max) of ``RUNS`` fresh subprocesses, timed inside the child
with ``time.perf_counter`` after the baseline is already imported (so "on top of nonebot" is
measured directly, not as a difference of two noisy totals):

- ``import``: ``import nonebot_plugin_llm2pic`` after ``import nonebot``. Outside NoneBot's plugin
  loader this only imports the metadata (the package guards its plugin body).
- ``load_plugin`` (reported against the budget): ``nonebot.load_plugin("nonebot_plugin_llm2pic")``
  after ``nonebot.init()`` and the OneBot v11 adapter import, i.e. what the plugin adds to a
  running OneBot bot: localstore, the settings, matchers, pipeline, HTTP client, Pillow.
- ``adapter + load_plugin``: the same with the OneBot v11 adapter import counted too.

Baseline: NoneBot's own ``import nonebot`` + ``nonebot.init()`` in the same children.

Add ``--importtime`` to print the slowest modules under the plugin (``python -X importtime``).
Run from the repository root: ``.venv/bin/python -m bench.import_time`` (about 20 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ._stats import fmt, machine, summary, verdict

RUNS = 7
BUDGET = 0.300
REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import nonebot
mode = sys.argv[1]
if mode == "import":
    t1 = time.perf_counter()
    import nonebot_plugin_llm2pic
    t2 = time.perf_counter()
else:
    nonebot.init(driver="~none", log_level="WARNING")
    if mode == "load_plugin":
        import nonebot.adapters.onebot.v11
    t1 = time.perf_counter()
    if mode == "adapter+load_plugin":
        import nonebot.adapters.onebot.v11
    plugin = nonebot.load_plugin("nonebot_plugin_llm2pic")
    t2 = time.perf_counter()
    assert plugin is not None and plugin.matcher, "the plugin did not load"
print(json.dumps({"base": t1 - t0, "cost": t2 - t1}))
"""

MODES = ("import", "load_plugin", "adapter+load_plugin")


def child_env(workdir: str) -> dict[str, str]:
    return {
        **os.environ,
        # NoneBot's loader finds plugins on sys.path; an editable install may not be on it.
        "PYTHONPATH": str(REPO),
        "LOCALSTORE_USE_CWD": "true",
        "LLM2PIC_CONFIG": str(Path(workdir) / "llm2pic.toml"),
    }


def run_child(mode: str, workdir: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-c", CHILD, mode],
        cwd=workdir,
        env=child_env(workdir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def importtime(workdir: str, top: int = 15) -> None:
    """The slowest modules (cumulative µs) imported while loading the plugin."""
    err = run_child("load_plugin", workdir, "-X", "importtime").stderr
    rows = []
    seen_adapter = False
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_part, cumulative, name = (part.strip() for part in line.split("|", 2))
        self_us = self_part.removeprefix("import time:").strip()
        if line.split("|")[2] == " nonebot.adapters.onebot.v11":  # the top-level import
            seen_adapter = True
            continue
        if seen_adapter and self_us.isdigit():
            rows.append((int(cumulative), int(self_us), name))
    print("\nslowest imports under load_plugin (cumulative / self, under -X importtime):")
    for cumulative, self_us, name in sorted(rows, reverse=True)[:top]:
        print(f"  {cumulative / 1000:7.1f} ms {self_us / 1000:7.1f} ms  {name}")


def main() -> int:
    print(f"Import cost on top of NoneBot, {RUNS} fresh processes each — {machine()}")
    results: dict[str, dict[str, list[float]]] = {m: {"base": [], "cost": []} for m in MODES}
    with tempfile.TemporaryDirectory() as workdir:
        run_child("load_plugin", workdir)  # first run writes the default config: not timed
        for _ in range(RUNS):
            for mode in MODES:
                sample = json.loads(run_child(mode, workdir).stdout.strip().splitlines()[-1])
                for key in ("base", "cost"):
                    results[mode][key].append(sample[key])
        for mode in MODES:
            base = "import nonebot" if mode == "import" else "import nonebot + init()"
            if mode == "load_plugin":
                base += " + adapter"
            print(
                f"  {mode:22s} {fmt(results[mode]['cost'])}   (baseline {base}: "
                f"{fmt(results[mode]['base'])})"
            )
        if "--importtime" in sys.argv:
            importtime(workdir)
    ok = summary(results["load_plugin"]["cost"])[0] <= BUDGET
    print(
        f"\nload_plugin on top of nonebot + adapter: budget ≤ {BUDGET * 1000:.0f} ms {verdict(ok)}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
