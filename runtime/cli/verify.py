"""The ``verify`` command: check a sketch's sealed manifest, every array's checksum, and
say which results stored beside it (``SKETCH/cache``, ``SKETCH/metagrad``) are current."""

from __future__ import annotations

import argparse

from runtime.cli.common import Command, print_json, user_errors
from runtime.cli.options import add_json
from runtime.store import Sketch

__all__ = ["VERIFY"]


def configure_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("sketch", metavar="SKETCH", help="sketch directory made by compile")
    add_json(p)


DERIVED = ("cache", "metagrad")  # stored beside a sketch by query and metagrad


def run_verify(args: argparse.Namespace) -> int:
    with user_errors():
        sk = Sketch.open(args.sketch)  # the manifest's seal, names and sizes
        sk.verify_all()  # every array's sha256
        stored = {
            kind: sk.derived(kind, inputs=[]).entries()
            for kind in DERIVED
            if (sk.path / kind).is_dir()
        }
    files = len(sk.manifest["files"])
    stale = {k: [(n, why) for n, why in v if why] for k, v in stored.items()}
    if args.json:
        print_json(
            {
                "sketch": args.sketch,
                "ok": True,
                "files": files,
                "stored": {k: len(v) for k, v in stored.items()},
                "stale": {k: [n for n, _ in v] for k, v in stale.items()},
                "config": sk.config,
            }
        )
        return 0
    print(f"sketch {args.sketch}: ok (manifest checksum and {files} array files verified)")
    for kind, entries in stored.items():
        bad = stale[kind]
        note = f", {len(bad)} stale or damaged (recomputed when next asked for)" if bad else ""
        print(f"  {kind}/: {len(entries)} stored results{note}")
    return 0


VERIFY = Command(
    "verify",
    "Check a sketch's manifest and the checksum of every array file.",
    configure_verify,
    run_verify,
)
