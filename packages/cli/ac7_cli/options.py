"""Options shared by several verbs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def config_option[F: Callable[..., Any]](func: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="AC7_CONFIG",
        default="ac7.json",
        show_default=True,
        help="Team config file (env AC7_CONFIG).",
    )(func)
