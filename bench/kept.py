"""The command line shared by the tools that measure on a warehouse ``bench.run --keep`` kept
(``bench.rules_ab``, ``bench.profile_segments``): which folder, which database, which night."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

from retention.night import Night, night_for_date
from retention.settings import Settings


def parser(doc: str) -> argparse.ArgumentParser:
    """``--home``, ``--warehouse-url`` and ``--night``; the caller adds its own options."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="the folder bench.run --keep kept")
    parser.add_argument("--warehouse-url", help="default: the SQLite warehouse in --home")
    parser.add_argument("--night", type=dt.date.fromisoformat, default=dt.date(2026, 11, 27))
    return parser


def settings_and_night(args: argparse.Namespace) -> tuple[Settings, Night]:
    os.environ.setdefault("RETENTION_UNSUBSCRIBE_SECRET", "bench-only-unsubscribe-secret-0123456789")
    settings = Settings(home=args.home, warehouse_url=args.warehouse_url)
    return settings, night_for_date(args.night, settings.time_zone)
