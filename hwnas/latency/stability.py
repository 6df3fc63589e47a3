"""What a LUT knows about its own trustworthiness, and the one-line warnings it gives.

Two records in a LUT's metadata, each written where the evidence is measured:

* ``stability`` (by the profiler): the agreement asked of each kernel's rounds (``stable_within``)
  and the kernels whose rounds still disagreed when the profile's time budget ran out
  (:meth:`hwnas.latency.disturbance.Guard.stabilize`);
* ``drift`` (by ``hwnas lut validate``, :mod:`hwnas.latency.drift`): kernels that, timed again
  beside the validation's networks, ran much faster than the LUT says: their LUT entries were
  inflated while they were profiled. ``hwnas profile --remeasure drifted`` re-times them and
  clears them from the list.

:func:`lut_warnings` turns both into one line each, for ``hwnas lut show``, ``hwnas search`` and
``hwnas export``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

STABILITY_META = "stability"
DRIFT_META = "drift"
SHOWN = 3  # kernels named in a one-line warning
DRIFT_LIMIT = 1.3  # a kernel timed again beyond this ratio of its LUT entry, either way, has drifted
DRIFT_KERNELS = 32  # reference kernels 'hwnas lut validate' times again by default


def stability_meta(stable_within: float, unstable: Sequence[str]) -> dict[str, Any]:
    return {"stable_within": stable_within, "unstable": sorted(unstable)}


def record(meta: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The record ``name`` of a LUT's metadata, parsed (``{}`` where absent or not a record: a LUT
    from elsewhere is read, never trusted)."""
    value = meta.get(name)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {}
    return value if isinstance(value, dict) else {}


def _keys(value: Any) -> list[str]:
    return [str(k) for k in value] if isinstance(value, list) else []


def unstable_kernels(meta: Mapping[str, Any]) -> list[str]:
    return _keys(record(meta, STABILITY_META).get("unstable"))


def drifted_kernels(meta: Mapping[str, Any]) -> list[str]:
    return _keys(record(meta, DRIFT_META).get("kernels"))


def named(keys: Sequence[str]) -> str:
    """``a, b, c and 4 more``."""
    head = ", ".join(keys[:SHOWN])
    return head + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def lut_warnings(meta: Mapping[str, Any], path: str) -> list[str]:
    """One line per thing a user of the LUT at ``path`` should know before trusting it."""
    out = []
    unstable = unstable_kernels(meta)
    if unstable:
        within = record(meta, STABILITY_META).get("stable_within", 0.0)
        within = float(within) if isinstance(within, int | float) else 0.0
        out.append(f"{path}: {len(unstable)} kernel(s) never agreed within +-{within:.0%} across rounds while it was "
                   f"profiled ({named(unstable)}); run the same 'hwnas profile' command again to re-measure them")  # fmt: skip
    drifted = drifted_kernels(meta)
    if drifted:
        out.append(f"{path}: 'hwnas lut validate' found {len(drifted)} kernel(s) profiled slower than they run "
                   f"({named(drifted)}); re-time them with 'hwnas profile ... --out {path} --remeasure drifted', "
                   "then refit with 'hwnas lut validate ... --fit'")  # fmt: skip
    return out
