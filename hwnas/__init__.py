"""hwnas: hardware-aware neural architecture search, from device profile to mobile export."""

from __future__ import annotations

__version__ = "0.1.0"
