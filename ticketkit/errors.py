"""The one error type users see. The CLI prints it as a single line and exits non-zero."""


class TicketkitError(Exception):
    """A problem the user can fix. The message names what is wrong and how to fix it."""

    exit_code = 2


class IntegrityError(TicketkitError):
    """An artifact on disk is corrupt, truncated or tampered with."""

    exit_code = 3


class TrainingDiverged(TicketkitError):
    """Loss became NaN or inf; the level is stopped and reported rather than silently continued."""

    exit_code = 4
