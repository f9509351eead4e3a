"""What ``evaluate`` found, kept beside a sketch, and how ``--estimator auto`` uses it.

Stored as ``SKETCH/evaluate/findings.json``::

    {"format": "circuitsketch-findings", "version": 1,
     "sketch": <the sketch's id>, "sha256": <sha256 of the canonical body>,
     "body": {"sizes": {"10": {"ranking": ["first-order", "hybrid", "sketch"],
                               "lds": {"first-order": 0.98, ...}}, ...}, ...}}

written atomically.  Like the other sidecars, a file that names another
sketch or fails its checksum is refused (SketchError), never silently used.

``choose`` is auto's rule (and ``scale`` its calibration of each estimator's
stderr at each evaluated size, the split-conformal factor ``metrics.calibration``
found): for a query deleting z documents, take the
evaluated size nearest z (on a log scale: 40 is nearer 100 than 10) and the
best-ranked estimator there (highest LDS) that this test input can use
without new computation (``first-order`` and ``hybrid`` need its stored
metagradient, ``second-order`` its second-order data); if that one has no
calibrated error bar, the best usable one that has one and whose LDS lies
inside the best's bootstrap interval.  Without findings (or when none of the ranked ones can be
used): ``first-order`` if its metagradient is stored, else ``sketch``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from fractions import Fraction
from pathlib import Path
from typing import Any

from runtime.spec import sha256_bytes
from runtime.store import Sketch, SketchError, atomic_write_json

__all__ = ["FINDINGS", "choose", "findings_path", "read_findings", "scale", "write_findings"]

FORMAT = "circuitsketch-findings"
VERSION = 1
FINDINGS = "evaluate/findings.json"


def findings_path(sketch: Sketch) -> Path:
    return Path(sketch.path) / FINDINGS


def _digest(body: dict[str, Any]) -> str:
    return sha256_bytes(json.dumps(body, sort_keys=True, allow_nan=False).encode())


def write_findings(sketch: Sketch, body: dict[str, Any]) -> Path:
    """Store `body` (plain JSON: no NaN) as the sketch's findings, atomically."""
    p = findings_path(sketch)
    p.parent.mkdir(exist_ok=True)
    atomic_write_json(
        p,
        {
            "format": FORMAT,
            "version": VERSION,
            "sketch": sketch.sketch_id,
            "sha256": _digest(body),
            "body": body,
        },
    )
    return p


def read_findings(sketch: Sketch) -> dict[str, Any] | None:
    """The stored findings' body, None if there are none (SketchError if unusable)."""
    p = findings_path(sketch)
    if not p.exists():
        return None
    fix = f"delete {str(p)!r} or rerun `circuitsketch evaluate` on this sketch"
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError("not a findings file")
        body = obj["body"]
        ok = obj.get("sha256") == _digest(body)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:  # too deep JSON
        raise SketchError(f"evaluation findings {str(p)!r} are unreadable ({e}): {fix}") from None
    if obj.get("version") != VERSION:
        raise SketchError(
            f"evaluation findings {str(p)!r} have version {obj.get('version')!r}, "
            f"this program reads {VERSION}: {fix}"
        )
    if not ok:
        raise SketchError(f"evaluation findings {str(p)!r} are corrupt (checksum mismatch): {fix}")
    if obj.get("sketch") != sketch.sketch_id:
        raise SketchError(
            f"evaluation findings {str(p)!r} were made for another sketch (or this sketch changed "
            f"since): {fix}"
        )
    return body


def nearest_size(sizes: Collection[int], z: int) -> int:
    """The evaluated size nearest z on a log scale (the smaller one on a tie; z = 0: the
    smallest)."""
    zz = max(int(z), 1)
    # the ratio max/min as an exact fraction: no rounding decides a tie
    return min(sizes, key=lambda s: (Fraction(max(s, zz), min(s, zz)), s))


def choose(
    findings: dict[str, Any] | None, size: int, available: Collection[str]
) -> tuple[str, int | None]:
    """auto's pick for a query deleting `size` documents: (estimator, evaluated size used, or
    None when no finding applied).  `available`: the estimators this test input can use."""
    ranked = (findings or {}).get("sizes") or {}
    if ranked:
        z = nearest_size([int(s) for s in ranked], size)
        found = ranked[str(z)]
        usable = [n for n in found.get("ranking", []) if n in available]
        if usable:
            return _with_error_bars(found, usable, scale(findings, z, usable[0])), z
    return ("first-order" if "first-order" in available else "sketch"), None


def _with_error_bars(found: dict[str, Any], usable: list[str], best_scale: float | None) -> str:
    """The best-ranked estimator; but when it has no calibrated error bar (first order's is
    0), the best one that has one and whose LDS is inside the best's bootstrap interval:
    as good a ranking as far as the evaluation can tell, and honest error bars."""
    best = usable[0]
    low = (found.get("lds_ci") or {}).get(best, [None])[0]
    if best_scale is not None or low is None:
        return best
    scales, lds = found.get("scale") or {}, found.get("lds") or {}
    for name in usable[1:]:
        a, x = scales.get(name), lds.get(name)
        if isinstance(a, int | float) and math.isfinite(a) and x is not None and x >= low:
            return name
    return best


def scale(findings: dict[str, Any] | None, size: int | None, name: str) -> float | None:
    """The factor evaluate found the stderr of `name` must grow by at evaluated `size` for its
    2-s.e. band to cover as it should (``metrics.calibration``); None if there is none."""
    if findings is None or size is None:
        return None
    a = (findings.get("sizes", {}).get(str(size), {}).get("scale") or {}).get(name)
    return float(a) if isinstance(a, int | float) and math.isfinite(a) else None
