"""DMaskingNAS (FBNetV2): ``supernet`` (masks and paths), ``cost`` (the exact differentiable expected
cost and the cost of one network), ``loop`` (the search), ``derive`` (the discrete child under the
budget), ``slicing`` (a child's weights from the supernet), ``data`` and ``npz_reader`` (training
images), ``training`` (the child recipe), ``checkpoints`` (child and search files), ``run_plots``."""
