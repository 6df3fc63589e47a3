"""PyTorch modules built from the data layer: ``layers`` (conv-bn-act, squeeze-excite, shared with
the LUT's kernel models), ``blocks``, ``builder`` (architecture -> ``nn.Module``) and ``counting``
(FLOPs and parameters with fvcore)."""
