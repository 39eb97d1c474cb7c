"""``manage.py locks run|list|release|bench``: the ``locks`` command line inside a project."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from locks import cli


class Command(BaseCommand):
    help = "Run a command under a lock, list held locks, force-release one, or benchmark a backend."
    # `locks run` must reach the lock server before Django's checks could touch a database.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_commands(parser, django=True)

    def run_from_argv(self, argv: list[str]) -> None:
        # Exit with the command's code (locks run passes its child's through), which
        # BaseCommand.execute cannot do.
        parser = self.create_parser(argv[0], argv[1])
        options = parser.parse_args(argv[2:])
        sys.exit(cli.execute(options))

    def handle(self, *args: Any, **options: Any) -> None:
        # From call_command(): same behaviour, the exit code raised as SystemExit when not 0.
        code = cli.execute(argparse.Namespace(**options))
        if code:
            raise SystemExit(code)
