"""The search protocol (``benchmarks/search_protocol.py``, the command) in parts with public names:
``jobs`` (what worker processes run), ``arms`` (the networks of each arm), ``stats`` (p-values,
Kendall tau and its noise ceiling) and ``report`` (the markdown tables). Scripts import it by its
plain name, with ``benchmarks/`` on the path, as they do ``noise``."""
