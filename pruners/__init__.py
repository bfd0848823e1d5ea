"""Pure-torch pruning pieces, one module each: ``gates``, ``importance`` (ours) and ``tp_importance`` /
``tp_groups`` (torch-pruning's criteria and dependency groups), ``size`` accounting, ``allocation`` of
uniform sizes, ``schedules`` and the ``lagrangian`` controller.

Nothing is imported here, so ``pruners.schedules`` (pure Python) checks a recipe without loading torch.
"""
