"""The supernet evaluator's training defaults, without torch: :class:`hwnas.ofa.train.SupernetSettings`
takes them, and ``hwnas search --help`` states them from here (so the help never drifts from the code)."""

# Chosen on the shipped digits (benchmarks/evaluators.py): 30 epochs ranked worse than 20 (the small
# data is overfitted).
#: Supernet training epochs (sandwich rule).
EPOCHS = 20
#: Training batch size.
BATCH = 64
#: SGD learning rate (Nesterov momentum, cosine schedule).
LR = 0.1
