"""Data: deterministic training batches for each kind of input (text through a format, token ids,
vector prompts), curricula and mixtures. Batch `step` is a pure function of the stream and the step."""
