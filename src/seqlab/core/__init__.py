"""The ground floor: typed configs, atomic I/O, the two errors, one generic registry. Imports nothing of seqlab."""
