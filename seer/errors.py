"""User-facing errors: bad input that the CLI reports in one line with exit status 2."""


class SeerInputError(Exception):
    """Bad input from the user (a file, a flag, a model). The message is one line naming what and where."""


class TraceError(SeerInputError):
    """A trace file that cannot be read or does not follow the schema."""

    def __init__(
        self, path: str, message: str, row: int | None = None, column: str | None = None, line: int | None = None
    ):
        """`line`: the row's line in the file, where blank lines make it other than a reader would count."""
        self.path, self.row, self.column = path, row, column
        where = [str(path)]
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line not in (None, row) else ""))
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}")


class PolicyError(RuntimeError):
    """A policy broke the contract (dispatched a request that is not waiting, to a failed instance, ...). The CLI
    reports it in one line with exit status 2, as bad input: a policy given as module.Class is the user's."""
