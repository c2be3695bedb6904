"""Flag builders the command-line tools share: one `--flag` per field of a dataclass config."""
from __future__ import annotations

import argparse
from dataclasses import fields


def add_config_flags(parser: argparse.ArgumentParser, config, skip: tuple[str, ...] = ()) -> None:
    """One --flag per (scalar) field of a dataclass config, with its default, type and the help its class's HELP
    gives."""
    for f in fields(config):
        if f.name in skip:
            continue
        default, text = getattr(config, f.name), type(config).HELP[f.name]
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=f"{text} (default: {default!r})")
