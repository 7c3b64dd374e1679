"""Command line: ``python -m nonebot_plugin_llm2pic serve|draw|check|config``.

Every verb takes ``--config PATH``. Verbs other than ``serve`` run outside a loaded plugin.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .config import CONFIG_ENV, PLUGIN_NAME
from .exceptions import BackendUnavailableError, Llm2PicError, SettingsError
from .imaging import convert_image
from .intent import aspect_hint
from .persona_refs import inspect
from .pipeline import DrawJob, DrawResult, Pipeline
from .prompt_writer import probe_llm
from .settings import Settings
from .settings_store import SettingsStore
from .transport import new_session


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one verb; the return value is the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.config:
        # One place decides the path (config.resolve_config_path); the env var carries
        # --config into it, and into the NoneBot process `serve` starts.
        import os

        os.environ[CONFIG_ENV] = str(Path(args.config).expanduser().resolve())
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nonebot_plugin_llm2pic")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="llm2pic.toml to use")
    verbs = parser.add_subparsers(dest="verb", required=True)

    serve = verbs.add_parser("serve", parents=[common], help="run the bot (OneBot v11 reverse WS)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=_serve)

    draw = verbs.add_parser("draw", parents=[common], help="run the pipeline once")
    draw.add_argument("text", help="描述 / prompt")
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
    get = config_verbs.add_parser("get", parents=[common])
    get.add_argument("key")
    get.set_defaults(func=_config_get)
    set_ = config_verbs.add_parser("set", parents=[common])
    set_.add_argument("key")
    set_.add_argument("value")
    set_.set_defaults(func=_config_set)
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
    store = SettingsStore(resolve_config_path(), data_dir())
    store.load()  # creates the file from the example when missing, like the bot does
    return store


def _serve(args: argparse.Namespace) -> int:
    import nonebot
    from nonebot.adapters.onebot.v11 import Adapter as OneBotV11Adapter

    nonebot.init(driver="~fastapi", host=args.host, port=args.port)
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


def _draw(args: argparse.Namespace) -> int:
    store = _open_store()
    if store.last_error:
        return _fail(f"{store.path}: {store.last_error}")
    if args.backend and args.backend not in store.settings.backends:
        return _fail(
            f"no enabled backend named {args.backend!r} "
            f"(enabled: {', '.join(sorted(store.settings.backends))})"
        )
    output = Path(args.output)
    try:
        result = asyncio.run(_draw_once(store, args))
        data = convert_image(result.image.data, output.suffix or ".png")
    except Llm2PicError as err:
        return _fail(_one_line(err))
    output.write_bytes(data)
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
        )
        return await pipeline.run(job)


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


async def _probe_all(settings: Settings) -> list[tuple[str, str, str]]:
    """Probe the LLM and every backend concurrently; a row per probe."""
    routed = {
        settings.routing.default,
        settings.routing.anime,
        settings.routing.real,
        *settings.routing.fallback,
    } - {""}
    async with new_session() as session:
        pipeline = Pipeline(session, lambda: settings)

        async def probe(name: str, call) -> tuple[str, str, str]:
            try:
                return name, "ok", await call()
            except BackendUnavailableError as err:
                # An unconfigured backend nobody routes to is not broken, just unused.
                status = "FAILED" if name.removeprefix("backend ") in routed else "unused"
                return name, status, _one_line(err)
            except Llm2PicError as err:
                return name, "FAILED", _one_line(err)

        probes = [probe("llm", lambda: probe_llm(session, settings))]
        probes += [
            probe(f"backend {name}", pipeline.backend(name).probe) for name in settings.backends
        ]
        return list(await asyncio.gather(*probes))


def _one_line(err: Llm2PicError) -> str:
    """The user-facing reason plus the admin detail, on one line."""
    detail = " ".join(str(err).split())
    return f"{err.user_message} ({detail})" if detail != err.user_message else detail


def _config_get(args: argparse.Namespace) -> int:
    store = _open_store()
    if store.last_error:
        return _fail(f"{store.path}: {store.last_error}")
    try:
        value = store.get(args.key)
    except SettingsError as err:
        return _fail(str(err))
    text = store.show(args.key) if isinstance(value, dict) else repr(value)
    sys.stdout.write(f"{text}\n")
    return 0


def _config_set(args: argparse.Namespace) -> int:
    store = _open_store()
    try:
        result = store.set(args.key, args.value)
    except SettingsError as err:
        return _fail(str(err))
    restart = " (restart the bot to apply)" if result.needs_restart else ""
    sys.stdout.write(f"{result.key} = {result.value!r}{restart}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
