"""Text files of documents, read as data: one document per line, every bad line named.

Document i is line i + 1 of the file, so deletion indices and line numbers
agree.  A blank line before the last document would break that: it is an
error naming the line, unless the caller asks to skip blank lines (then a
warning says how many were skipped).  Blank lines after the last document
shift nothing and are ignored.  Bytes that are not UTF-8 are an error naming
the file, the line and the column; a UTF-8 byte-order mark is dropped, and
each line is stripped of surrounding white space (``\\r\\n`` endings included).
"""

from __future__ import annotations

import codecs
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["SKIP_BLANK_OPTION", "read_document_lines", "read_documents", "read_input"]

SKIP_BLANK_OPTION = "--skip-blank-lines"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def read_input(path: str | Path, what: str) -> bytes:
    """The bytes of an input file, read once (so a named pipe reads as a file does);
    ValueError naming `what` and the path if it is a directory, missing or unreadable."""
    name = f"{what} {str(path)!r}"
    if Path(path).is_dir():
        raise ValueError(f"{name} is a directory")
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{name} does not exist") from None
    except OSError as e:
        raise ValueError(f"{name}: cannot read it: {e.strerror or e}") from None


def read_document_lines(
    path: str | Path,
    what: str = "documents file",
    skip_blank: bool = False,
    blank_ok: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[tuple[int, str]]:
    """(line number, document) of every non-blank line of a text file (ValueError naming
    the file and line of the first problem).

    `skip_blank`: skip blank lines between documents with a warning instead of
    refusing them; `blank_ok`: skip them silently (a list whose order carries no
    meaning, such as a file of documents to delete).
    """
    p = Path(path)
    data = read_input(p, what)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    out: list[tuple[int, str]] = []
    blanks: list[int] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{what} {str(p)!r}, line {number}: not UTF-8 text (byte 0x{raw[e.start]:02x} "
                f"at column {e.start + 1}); save the file as UTF-8"
            ) from None
        if text:
            out.append((number, text))
        else:
            blanks.append(number)
    if not out:
        raise ValueError(f"{what} {str(p)!r} holds no documents")
    inner = [b for b in blanks if b < out[-1][0]]  # trailing blank lines shift nothing
    if inner and not blank_ok:
        lines = ", ".join(map(str, inner[:5])) + (", ..." if len(inner) > 5 else "")
        if not skip_blank:
            raise ValueError(
                f"{what} {str(p)!r}, line {inner[0]}: blank line (document i is line i + 1; "
                f"blank lines: {lines}): remove them, or pass {SKIP_BLANK_OPTION} to skip them"
            )
        (warn or _warn)(
            f"{what} {str(p)!r}: skipped {len(inner)} blank line(s) (line {lines}): "
            "document indices no longer follow line numbers"
        )
    return out


def read_documents(
    path: str | Path,
    what: str = "documents file",
    skip_blank: bool = False,
    blank_ok: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[str]:
    """The documents of a text file (see ``read_document_lines``)."""
    return [d for _, d in read_document_lines(path, what, skip_blank, blank_ok, warn)]
