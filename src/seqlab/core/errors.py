"""The two ways a seqlab command fails, mapped to exit codes by the CLI."""


class BadInput(ValueError):
    """The user asked for something that cannot be done as asked (exit code 2).

    The message is one line that says what was wrong and, where possible, what to do.
    """


class RunFailed(RuntimeError):
    """The run itself failed: it diverged, or missed a target it was asked to reach (exit code 1)."""
