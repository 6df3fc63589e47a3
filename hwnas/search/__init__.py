"""DMaskingNAS (FBNetV2): ``supernet`` (masks and paths), ``cost`` (the exact differentiable expected
cost and the cost of one network), ``penalty`` (the budget term), ``loop`` (the search), ``derive``,
``select`` and ``evolution`` (the discrete child under the budget), ``slicing`` (a child's weights
from the supernet), ``run_plots``. Training data and checkpoints are :mod:`hwnas.train`'s."""
