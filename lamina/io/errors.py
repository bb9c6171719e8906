"""The one exception every file problem raises (kept in its own module so every reader can import it)."""

__all__ = ["ModelFileError"]


class ModelFileError(ValueError):
    """A model, weights or input file that cannot be read: truncated, corrupt, foreign, oversized or unsafe.

    ``path`` is the file, ``problem`` what is wrong with it; ``str(e)`` is ``"<path>: <problem>"``, one line.
    It is a ValueError, so code written for Keras's errors still catches it."""

    def __init__(self, path, problem):
        self.path, self.problem = str(path), " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")
