"""Self-improvement (Lee, Cai et al. 2025): its config and round data (config.py), the filters that keep
self-made labels (label_filters.py), and the rounds that label, filter and train (rounds.py)."""
