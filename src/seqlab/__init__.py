"""seqlab: small sequence models trained from scratch on procedurally generated tasks.

    import seqlab
    run = seqlab.load("runs/my-addition")      # any kind of run: the model, its config, generate, score
"""

from seqlab.core.version import __version__


def load(run_dir, device=None):
    """The trained run in `run_dir` (any kind), with the newest checkpoint's weights: see `seqlab.runs.LoadedRun`."""
    from seqlab.runs import load as load_run

    return load_run(run_dir, device=device)


__all__ = ["__version__", "load"]
