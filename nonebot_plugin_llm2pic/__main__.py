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
from .pipeline import DrawJob, DrawResult, Pipeline
from .prompt_writer import LLM_BACKEND, probe_llm
from .settings import Settings
from .settings_store import LAST_GOOD_NAME, SettingsStore, toml_value
from .transport import ProbeResult, new_session, run_probe

LLM_ROW = "LLM"


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
    draw.add_argument("-o", "--output", default="out.png", help="image file to write")
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
    store = SettingsStore(resolve_config_path(), data_dir() / LAST_GOOD_NAME)
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
        result = asyncio.run(_draw_once(store, args))
        data = convert_image(result.image.data, fmt)
        output.write_bytes(data)
    except Llm2PicError as err:
        return _fail(_one_line(err))
    except OSError as err:
        return _fail(f"{output}: {err.strerror or err}")
    timings = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result.timings.items())
    sys.stdout.write(
        f"prompt: {result.prompt}\nbackend: {result.backend}"
        f"{f' (seed {result.seed})' if result.seed is not None else ''}\n"
        f"timings: {timings}\nwrote {output} ({len(data)} bytes, "
        f"{result.image.width}x{result.image.height})\n"
    )
    return 0


async def _draw_once(store: SettingsStore, args: argparse.Namespace) -> DrawResult:
    async with new_session() as session:
        pipeline = Pipeline(session, lambda: store.settings)
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
        )
        return await pipeline.run(job)


def _check(args: argparse.Namespace) -> int:
    store = _open_store()
    if store.last_error:
        return _fail(f"{store.path}: {store.last_error}")
    rows = [("config", "ok", str(store.path))]
    rows += asyncio.run(_probe_all(store.settings))
    width = max(len(name) for name, _, _ in rows)
    for name, status, detail in rows:
        sys.stdout.write(f"{name:<{width}}  {status:<7}  {detail}\n")
    return 1 if any(status == "FAILED" for _, status, _ in rows) else 0


def routed_backends(settings: Settings) -> set[str]:
    """The backends the bot will really use: every name in ``[routing]``."""
    routing = settings.routing
    names = {routing.default, routing.anime, routing.real, *routing.fallback}
    names.add(getattr(routing, "selfie", ""))
    return names - {""}


def _probe(session: aiohttp.ClientSession, pipeline: Pipeline, name: str) -> Awaitable[ProbeResult]:
    """The probe behind one row of the table (``LLM`` or a backend name); never raises."""
    if name == LLM_ROW:
        return run_probe(lambda: probe_llm(session, pipeline.settings()))
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

        rows = [row(LLM_ROW, LLM_ROW, settings.llm.configured)]
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


if __name__ == "__main__":
    sys.exit(main())
