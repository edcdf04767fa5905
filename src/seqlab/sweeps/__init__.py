"""Sweeps: many runs from one Python file, on a local pool or Ray (sweep.py, backends.py), and their summary."""
