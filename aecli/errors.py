"""Errors a user can fix, each mapped to a documented exit code.

Library code raises these; the CLI turns them into a one-line message and the exit code, never a
traceback. Anything else escaping is a bug (exit 1 with the traceback, so it can be reported).
"""

EXIT_OK = 0
EXIT_FAILURE = 1  # runtime failure: diverged loss, disk full, I/O error
EXIT_USAGE = 2  # bad option, bad input file, unusable checkpoint
EXIT_INTERRUPTED = 75  # stopped cleanly on SIGTERM/SIGUSR1 with resume state written (EX_TEMPFAIL)


class AecliError(Exception):
    """A problem the user can act on. The message names the problem and the fix."""

    exit_code = EXIT_USAGE


class UsageError(AecliError):
    """A wrong option value or an unsupported combination."""


class DataError(AecliError):
    """A data source that cannot be read or is empty."""


class CheckpointError(AecliError):
    """A checkpoint file that cannot be trusted or used."""


class WeightsMissingError(AecliError):
    """Pretrained weights (LPIPS, Inception) are not on disk; never download them implicitly."""


class TrainingError(AecliError):
    """Training had to stop (non-finite loss, write failure); the last good checkpoint is kept."""

    exit_code = EXIT_FAILURE


class Interrupted(AecliError):
    """A signal asked us to stop; state was saved and the run can be resumed."""

    exit_code = EXIT_INTERRUPTED
