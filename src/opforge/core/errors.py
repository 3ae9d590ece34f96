"""The one error type users see, and the process exit codes."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class OpforgeError(Exception):
    """A failure the user can act on. Its message is one line naming the node, file or option at fault."""

    exit_code = EXIT_FAILED


class UsageError(OpforgeError):
    """Bad command-line usage or a bad option value."""

    exit_code = EXIT_USAGE


class LoweringError(OpforgeError):
    """TVM (or opforge's lowering of TVM's IR) cannot turn a node into kernels."""
