"""Training, below the search and above the LUT: training images (``data``, ``npz_reader``),
the child recipe and its training loop (``training``), and the child and search checkpoint files
(``checkpoints``)."""
