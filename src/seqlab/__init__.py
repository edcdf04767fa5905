"""seqlab: small sequence models trained from scratch on procedurally generated tasks."""

__version__ = "0.1.0"
