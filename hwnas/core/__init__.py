"""The bottom layer, used by every other package: errors (``errors``), atomic file writes
(``fileio``), tensor files as safetensors + JSON (``tensorfile``), progress bars (``progress``) and
quieting third-party chatter (``quiet``). It imports nothing else of hwnas; only ``tensorfile``
imports torch."""
