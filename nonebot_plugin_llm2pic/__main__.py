"""Command line: ``python -m nonebot_plugin_llm2pic serve|draw|check|config``.

Every verb takes ``--config PATH``. Verbs other than ``serve`` run outside a loaded plugin.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable
from pathlib import Path

import aiohttp

from .config import CONFIG_ENV, PLUGIN_NAME
from .exceptions import Llm2PicError, SettingsError
from .imaging import convert_image, output_mime
from .intent import aspect_hint
from .persona_refs import inspect
from .pipeline import Batch, DrawJob, Pipeline
from .prompt_writer import LLM_BACKEND, probe_llm, probe_llm_vision
from .settings import Settings, routed_backends
from .settings_store import LAST_GOOD_NAME, SettingsStore, toml_value
from .transport import ProbeResult, new_session, run_probe

LLM_ROW = "LLM"
VISION_ROW = "vision"


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one verb; the return value is the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        # One place decides the path (config.resolve_config_path); the env var carries
        # --config into it, and into the NoneBot process `serve` starts.
        import os

        os.environ[CONFIG_ENV] = str(Path(args.config).expanduser().resolve())
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    # --config is accepted before or after any verb; SUPPRESS keeps a later level's unset
    # default from overwriting a value given earlier on the line.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS, help="llm2pic.toml to use"
    )
    parser = argparse.ArgumentParser(prog="python -m nonebot_plugin_llm2pic", parents=[common])
    verbs = parser.add_subparsers(dest="verb", required=True)

    serve = verbs.add_parser("serve", parents=[common], help="run the bot (OneBot v11 reverse WS)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=_serve)

    draw = verbs.add_parser("draw", parents=[common], help="run the pipeline once")
    # Unquoted words make one description or value, as in chat (`/pic 一只 猫`).
    draw.add_argument("text", nargs="+", help="描述 / prompt")
    draw.add_argument(
        "-o", "--output", default="out.png", help="image file to write (several: out-1.png …)"
    )
    draw.add_argument("-n", "--count", type=_positive, default=1, help="pictures to draw")
    draw.add_argument("--backend", "-b", help="backend name")
    draw.add_argument("--raw", "-r", action="store_true", help="skip the prompt writer")
    draw.add_argument("--selfie", action="store_true", help="draw the persona as a selfie")
    draw.add_argument(
        "--image", action="append", default=[], metavar="PATH_OR_URL", help="reference image"
    )
    draw.set_defaults(func=_draw)

    check = verbs.add_parser("check", parents=[common], help="validate config, probe backends")
    check.set_defaults(func=_check)

    config = verbs.add_parser("config", parents=[common], help="read or edit llm2pic.toml")
    config_verbs = config.add_subparsers(dest="config_verb", required=True)
    show = config_verbs.add_parser("show", parents=[common], help="the effective config as TOML")
    show.add_argument("section", nargs="?", default="")
    show.set_defaults(func=_config_show)
    get = config_verbs.add_parser("get", parents=[common], help="one value")
    get.add_argument("key")
    get.set_defaults(func=_config_get)
    set_ = config_verbs.add_parser("set", parents=[common], help="set one key")
    set_.add_argument("key")
    set_.add_argument("value", nargs="+")
    set_.set_defaults(func=_config_set)
    unset = config_verbs.add_parser("unset", parents=[common], help="remove a key (default again)")
    unset.add_argument("key")
    unset.set_defaults(func=_config_unset)
    group = config_verbs.add_parser("group", parents=[common], help="one group's overrides")
    group.add_argument("group_id")
    group.add_argument("action", choices=["get", "set", "unset"])
    group.add_argument("key", help="e.g. persona.name")
    group.add_argument("value", nargs="?")
    group.set_defaults(func=_config_group)
    return parser


def _fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 1


def _open_store():
    """The settings store for CLI verbs: NoneBot is initialised bare so localstore resolves."""
    import nonebot
    from nonebot.log import logger

    from .config import data_dir, resolve_config_path

    # NoneBot logs to stdout; a CLI verb's stdout is its answer, so only warnings, on stderr.
    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{level}: {message}")
    nonebot.init(driver="~none")
    # The same last-good copy as the bot's: an edit here is what a broken file falls back to.
    store = SettingsStore(resolve_config_path(), data_dir() / LAST_GOOD_NAME, data_dir=data_dir())
    store.load()  # creates the file from the example when missing, like the bot does
    return store


def _serve(args: argparse.Namespace) -> int:
    import nonebot
    from nonebot.adapters.onebot.v11 import Adapter as OneBotV11Adapter
    from pydantic import ValidationError

    kwargs: dict = {"driver": "~fastapi", "host": args.host, "port": args.port}
    superusers = _superusers_from_env()
    if superusers is not None:
        kwargs["superusers"] = superusers
    try:
        nonebot.init(**kwargs)
    except ValidationError as err:  # NoneBot's own .env settings: one line, not a traceback
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in err.errors()
        )
        return _fail(f"NoneBot settings are invalid: {problems}")
    if not nonebot.get_driver().config.superusers:
        nonebot.logger.warning(
            "llm2pic: SUPERUSERS is empty: nobody can use /llm2pic admin commands; "
            "set SUPERUSERS='[\"your QQ id\"]' in the environment or .env"
        )
    nonebot.get_driver().register_adapter(OneBotV11Adapter)
    # `python -m` imported this package as a plain module before nonebot.init(); NoneBot's
    # loader would skip a module already in sys.modules and serve without our matchers.
    for name in [m for m in sys.modules if m == PLUGIN_NAME or m.startswith(f"{PLUGIN_NAME}.")]:
        del sys.modules[name]
    # NoneBot's finder looks the plugin up on sys.path; an editable install may only be
    # reachable through its own import hook, so make the package's parent dir findable.
    package_parent = str(Path(__file__).resolve().parent.parent)
    if package_parent not in sys.path:
        sys.path.append(package_parent)
    plugin = nonebot.load_plugin(PLUGIN_NAME)
    if plugin is None or not plugin.matcher:
        return _fail("the llm2pic plugin did not load; not serving without it")
    from .log import install_log_masking  # imported afresh, beside the loaded plugin's state

    install_log_masking()  # NoneBot's message log prints what people send, keys included
    nonebot.logger.info(
        f"llm2pic: waiting for OneBot v11 reverse WebSocket at ws://{args.host}:{args.port}/onebot/v11/ws"
    )
    # permessage-deflate costs ~80 ms of event loop per image frame (``bench/overhead.py``).
    nonebot.run(ws_per_message_deflate=False)
    return 0


def _superusers_from_env() -> set[str] | None:
    """``SUPERUSERS`` from the environment or ``.env``, QQ ids typed as bare numbers accepted.

    None when it is unset or not a JSON list: NoneBot then reads (or rejects) it as usual.
    """
    import json
    import os

    from dotenv import dotenv_values

    raw = os.environ.get("SUPERUSERS")
    if raw is None:
        environment = os.environ.get("ENVIRONMENT") or dotenv_values(".env").get("ENVIRONMENT")
        for env_file in (f".env.{environment or 'prod'}", ".env"):
            values = {key.upper(): value for key, value in dotenv_values(env_file).items()}
            raw = values.get("SUPERUSERS")
            if raw is not None:
                break
    try:
        ids = json.loads(raw or "null")
    except ValueError:
        return None
    if not isinstance(ids, list):
        return None
    return {str(user_id) for user_id in ids}


def _draw(args: argparse.Namespace) -> int:
    args.text = " ".join(args.text)
    store = _open_store()
    if store.last_error:
        return _fail(f"{store.path}: {store.last_error}")
    if args.backend and args.backend not in store.settings.backends:
        return _fail(
            f"no enabled backend named {args.backend!r} "
            f"(enabled: {', '.join(sorted(store.settings.backends))})"
        )
    if not args.text.strip() and not args.selfie:
        return _fail("描述不能为空 (empty description)")
    output = Path(args.output)
    fmt = output.suffix or ".png"
    try:  # a typo in -o must not cost a generation
        output_mime(fmt)
        output.parent.mkdir(parents=True, exist_ok=True)
        batch = asyncio.run(_draw_once(store, args))
        files = [
            (_numbered(output, index, args.count), result, convert_image(result.image.data, fmt))
            for index, result in enumerate(batch.results, start=1)
        ]
        for path, _, data in files:
            path.write_bytes(data)
    except Llm2PicError as err:
        return _fail(_one_line(err))
    except OSError as err:
        return _fail(f"{output}: {err.strerror or err}")
    first = batch.results[0]
    timings = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in first.timings.items())
    sys.stdout.write(f"prompt: {first.prompt}\ntimings: {timings}\n")
    for path, result, data in files:
        sys.stdout.write(
            f"backend: {result.backend}"
            f"{f' (seed {result.seed})' if result.seed is not None else ''}; "
            f"wrote {path} ({len(data)} bytes, {result.image.width}x{result.image.height})\n"
        )
    if batch.failed:
        sys.stdout.write(f"{batch.failed} of {args.count} pictures failed (see the log)\n")
    return 0


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _numbered(output: Path, index: int, count: int) -> Path:
    """``out.png`` for one picture; ``out-1.png``, ``out-2.png`` … for several."""
    return output if count == 1 else output.with_name(f"{output.stem}-{index}{output.suffix}")


async def _draw_once(store: SettingsStore, args: argparse.Namespace) -> Batch:
    async with new_session() as session:
        pipeline = Pipeline(session, lambda: store.settings, roots=store.reference_roots)
        job = DrawJob(
            text=args.text,
            selfie=args.selfie,
            raw=args.raw,
            backend=args.backend,
            references=tuple(
                source if source.startswith(("http://", "https://")) else Path(source)
                for source in args.image
            ),
            aspect=aspect_hint(args.text),
            count=args.count,
        )
        return await pipeline.run_batch(job)


def _check(args: argparse.Namespace) -> int:
    store = _open_store()
    if store.last_error:
        return _fail(f"{store.path}: {store.last_error}")
    rows = [("config", "ok", str(store.path))]
    rows += _persona_rows(store)
    rows += asyncio.run(_probe_all(store.settings))
    width = max(len(name) for name, _, _ in rows)
    for name, status, detail in rows:
        sys.stdout.write(f"{name:<{width}}  {status:<7}  {detail}\n")
    return 1 if any(status == "FAILED" for _, status, _ in rows) else 0


def _persona_rows(store: SettingsStore) -> list[tuple[str, str, str]]:
    """A row per persona reference image (never a failure: selfies do without them)."""
    found = inspect(store.settings.persona.reference_images, store.reference_roots)
    rows = []
    for number, item in enumerate(found, start=1):
        if item.path is None:
            detail = f"{item.entry} (URL, fetched when a selfie is drawn)"
        else:
            size = f", {item.size} bytes" if item.size is not None else ""
            detail = f"{item.path}{size}{f': {item.problem}' if item.problem else ''}"
        rows.append((f"persona image {number}", "skipped" if item.problem else "ok", detail))
    return rows


def _probe(session: aiohttp.ClientSession, pipeline: Pipeline, name: str) -> Awaitable[ProbeResult]:
    """The probe behind one row of the table (``LLM`` or a backend name); never raises."""
    if name == LLM_ROW:
        return run_probe(lambda: probe_llm(session, pipeline.settings()))
    if name == VISION_ROW:
        return run_probe(lambda: probe_llm_vision(session, pipeline.settings()))
    return run_probe(pipeline.backend(name).probe)


async def _probe_all(settings: Settings) -> list[tuple[str, str, str]]:
    """Probe the LLM and every backend concurrently; a row per probe.

    Only what the bot will use can fail the check: a configured LLM and the routed backends.
    Any other backend is ``unused`` whatever its probe says.
    """
    used = routed_backends(settings)
    async with new_session() as session:
        pipeline = Pipeline(session, lambda: settings)

        async def row(name: str, label: str, counts: bool) -> tuple[str, str, str]:
            result = await _probe(session, pipeline, name)
            status = ("ok" if result.ok else "FAILED") if counts else "unused"
            return label, status, result.detail.replace(f"绘图服务 {LLM_BACKEND}", "LLM")

        rows = [row(label, label, settings.llm.configured) for label in (LLM_ROW, VISION_ROW)]
        rows += [row(name, f"backend {name}", name in used) for name in settings.backends]
        return list(await asyncio.gather(*rows))


def _one_line(err: Llm2PicError) -> str:
    """The user-facing reason plus the admin detail, on one line."""
    detail = " ".join(str(err).split())
    return f"{err.user_message} ({detail})" if detail != err.user_message else detail


def _config_show(args: argparse.Namespace) -> int:
    return _config_read(lambda store: store.show(args.section))


def _config_get(args: argparse.Namespace) -> int:
    def read(store: SettingsStore) -> str:
        value = store.get(args.key)
        return store.show(args.key) if isinstance(value, dict) else toml_value(value)

    return _config_read(read)


def _config_read(read) -> int:
    store = _open_store()
    if store.last_error:
        return _fail(f"{store.path}: {store.last_error}")
    try:
        text = read(store)
    except SettingsError as err:
        return _fail(str(err))
    sys.stdout.write(f"{text}\n")
    return 0


def _config_set(args: argparse.Namespace) -> int:
    return _config_write(lambda store: store.set(args.key, " ".join(args.value)))


def _config_unset(args: argparse.Namespace) -> int:
    return _config_write(lambda store: store.unset(args.key))


def _config_write(edit) -> int:
    """Run one edit; say what changed and in which file (the wrong file is easy to edit)."""
    store = _open_store()
    try:
        result = edit(store)
    except SettingsError as err:
        return _fail(f"{store.path} not changed: {err}")
    if result.value is None:
        change = f"removed {result.key}"
    else:
        change = f"{result.key} = {toml_value(result.value)}"
    restart = " (restart the bot to apply)" if result.needs_restart else ""
    sys.stdout.write(f"{change}{restart}\nwrote {store.path}\n")
    return 0


def _config_group(args: argparse.Namespace) -> int:
    """`config group ID get|set|unset KEY [VALUE]`: the group's ``[groups."<id>"]`` table."""
    if args.action == "get":

        def read(store: SettingsStore) -> str:
            value, own = store.get_group(args.group_id, args.key)
            return f"{toml_value(value)}{'' if own else '  (global)'}"

        return _config_read(read)
    if args.action == "set":
        if args.value is None:
            return _fail("config group ID set KEY VALUE: the value is missing")
        return _config_write(lambda store: store.set_group(args.group_id, args.key, args.value))
    return _config_write(lambda store: store.unset_group(args.group_id, args.key))


if __name__ == "__main__":
    sys.exit(main())
