"""The final training's defaults, readable without torch (``hwnas train --help`` shows them)."""

EPOCHS = 60
BATCH = 64
LR = 0.05
