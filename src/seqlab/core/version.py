"""seqlab's version, in the one place every layer can read it from."""

__version__ = "0.1.0"
