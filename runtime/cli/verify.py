"""The ``verify`` command: check a sketch's manifest and every array's checksum."""

from __future__ import annotations

import argparse

from runtime.cli.common import Command, print_json, user_errors
from runtime.cli.options import add_json
from runtime.store import Sketch

__all__ = ["VERIFY"]


def configure_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("sketch", metavar="SKETCH", help="sketch directory made by compile")
    add_json(p)


def run_verify(args: argparse.Namespace) -> int:
    with user_errors():
        sk = Sketch.open(args.sketch)
        sk.verify_all()
    files = len(sk.manifest["files"])
    if args.json:
        print_json({"sketch": args.sketch, "ok": True, "files": files, "config": sk.config})
    else:
        print(f"sketch {args.sketch}: ok ({files} array files verified)")
    return 0


VERIFY = Command(
    "verify",
    "Check a sketch's manifest and the checksum of every array file.",
    configure_verify,
    run_verify,
)
