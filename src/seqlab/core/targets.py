"""The target value that a loss skips: positions with nothing to predict."""

IGNORE = -100
