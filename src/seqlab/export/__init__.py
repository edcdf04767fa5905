"""Trained runs written for other libraries: `seqlab export RUN --to hf` (hf.py)."""
