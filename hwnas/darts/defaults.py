"""DARTS' training defaults, without torch: :class:`hwnas.darts.train.DartsConfig` takes them, and
``hwnas search --help`` states them from here (so the help never drifts from the code)."""

#: Supernet training epochs.
EPOCHS = 30
#: Training batch size.
BATCH = 64
