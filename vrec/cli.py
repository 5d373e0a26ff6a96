"""The ``vrec`` command line: produce, consume, train, recommend, inspect.

Every option that names a setting overrides its ``VREC_*`` environment
variable; see ``vrec --help`` and README "Settings".
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vrec.config import Settings, load_settings
from vrec.errors import ConfigError, VrecError

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace, Settings], int]

# Options that override one setting each: flag -> (setting, help).
_SETTING_FLAGS: dict[str, tuple[str, str]] = {
    "--bootstrap-servers": ("kafka_bootstrap_servers", "Kafka bootstrap servers"),
    "--topic": ("topic", "the events topic"),
    "--group-id": ("group_id", "the consumer group"),
    "--store-url": ("store_url", "SQLite path or postgresql:// URL"),
    "--redis-url": ("redis_url", "redis:// URL"),
    "--model-dir": ("model_dir", "where model versions are kept"),
}


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name, None) for name, _ in _SETTING_FLAGS.values()}
    return load_settings(**overrides)


def _cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from vrec.produce import produce_file

    count = produce_file(
        settings, Path(args.file), rate=args.rate, progress=not args.no_progress
    )
    print(f"produced {count} events to {settings.topic}")
    return 0


def _cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    from vrec.ingest import run_consumer
    from vrec.service import stop_on_signals

    run_consumer(settings, stop_on_signals())
    return 0


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from vrec.schedule import run_trainer
    from vrec.service import stop_on_signals

    run_trainer(settings, stop_on_signals(), once=args.once)
    return 0


def _cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from vrec.local import run_stack
    from vrec.service import stop_on_signals

    sample = Path(args.sample) if args.sample else None
    return run_stack(settings, stop_on_signals(), sample=sample, demo=args.demo)


def _cmd_recommend(args: argparse.Namespace, settings: Settings) -> int:
    from vrec.publish import connect, read_recommendations

    client = connect(settings.redis_url)
    rec = read_recommendations(
        client, args.user_id, k=args.k, prefix=settings.redis_prefix
    )
    if args.json:
        print(json.dumps(rec.to_dict()))
        return 0
    print(f"{rec.user_id}: {rec.source} list, model {rec.model_version}")
    for rank, (item, score) in enumerate(zip(rec.items, rec.scores, strict=True), 1):
        print(f"{rank:3d}. {item}  {score:.4f}")
    return 0


def _cmd_store_stats(args: argparse.Namespace, settings: Settings) -> int:
    from vrec.store import open_store

    with open_store(settings.store_url) as store:
        stats = store.stats().to_dict()
    if args.json:
        print(json.dumps(stats))
        return 0
    for key in ("events", "users", "items", "interactions", "rejected", "last_seq"):
        print(f"{key:>13}: {stats[key]}")
    for topic, parts in stats["offsets"].items():
        listed = ", ".join(f"{p}={o}" for p, o in parts.items())
        print(f"{'offsets':>13}: {topic} {listed}")
    return 0


def _cmd_model_list(args: argparse.Namespace, settings: Settings) -> int:
    from vrec.modelfile import list_versions

    versions = list_versions(settings.model_dir)
    if args.json:
        print(json.dumps([v.to_dict() for v in versions]))
        return 0
    if not versions:
        print(f"no model versions in {settings.model_dir}")
    for info in versions:
        print(info.describe())
    return 0


def _cmd_model_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from vrec.modelfile import rollback

    info = rollback(settings.model_dir)
    print(f"rolled back: current model is now {info.describe()}")
    print("a running trainer serves it within seconds and republishes every user")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-command per job."""
    # Setting flags work before or after the sub-command: SUPPRESS leaves
    # unset flags out of the namespace, so neither position overwrites the other.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO (default), WARNING"
    )
    for flag, (dest, text) in _SETTING_FLAGS.items():
        env = "VREC_" + dest.upper()
        common.add_argument(
            flag, dest=dest, default=argparse.SUPPRESS, help=f"{text} (${env})"
        )
    parser = argparse.ArgumentParser(
        prog="vrec", description="Streaming video recommendations.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Handler, text: str, **kw: Any
    ) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=text, description=text, parents=[common], **kw)
        cmd.set_defaults(handler=handler)
        return cmd

    produce = add("produce", _cmd_produce, "send a CSV or JSON-lines file as events")
    produce.add_argument(
        "file", help="CSV (userId,videoId,rating[,timestamp]) or JSONL"
    )
    produce.add_argument(
        "--rate", type=float, help="at most this many events per second"
    )
    produce.add_argument("--no-progress", action="store_true", help="no progress bar")

    add("consume", _cmd_consume, "store events from Kafka until SIGTERM or Ctrl-C")

    train = add("train", _cmd_train, "keep the model and Redis lists fresh")
    train.add_argument("--once", action="store_true", help="one full refit, then exit")

    up = add("up", _cmd_up, "run broker, Redis, consumer and trainer locally")
    up.add_argument("--sample", help="produce this file, then print its users' lists")
    up.add_argument("--demo", action="store_true", help="exit once the lists are shown")

    rec = add("recommend", _cmd_recommend, "show what Redis holds for a user")
    rec.add_argument("user_id")
    rec.add_argument("-k", type=int, default=None, help="at most this many videos")
    rec.add_argument("--json", action="store_true", help="one JSON object")

    store = add("store", _cmd_store_stats, "inspect the event store")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    stats = store_sub.add_parser("stats", help="counts and offsets", parents=[common])
    stats.add_argument("--json", action="store_true", help="one JSON object")

    model = sub.add_parser(
        "model", help="list or roll back model versions", parents=[common]
    )
    model_sub = model.add_subparsers(dest="model_command", required=True)
    listing = model_sub.add_parser(
        "list", help="saved versions, newest first", parents=[common]
    )
    listing.add_argument("--json", action="store_true", help="a JSON array")
    listing.set_defaults(handler=_cmd_model_list)
    back = model_sub.add_parser(
        "rollback", help="take the newest version out of service", parents=[common]
    )
    back.set_defaults(handler=_cmd_model_rollback)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    from vrec.service import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "log_level", "INFO"))
    try:
        settings = _settings_from(args)
        code: int = args.handler(args, settings)
    except ConfigError as exc:
        print(f"vrec: configuration error: {exc}", file=sys.stderr)
        return 2
    except VrecError as exc:
        print(f"vrec: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
