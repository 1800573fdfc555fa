"""The one error type users see. The CLI prints it as a single line and exits with the code of its kind: 3 for
bad input or data, 4 for integrity, 5 for divergence (2 is click's usage errors; the table is cliopts.EXIT_CODES)."""


class TicketkitError(Exception):
    """A problem the user can fix. The message names what is wrong and how to fix it."""

    exit_code = 3


class IntegrityError(TicketkitError):
    """An artifact on disk is corrupt, truncated or tampered with."""

    exit_code = 4


class TrainingDiverged(TicketkitError):
    """Loss became NaN or inf; the level is stopped and reported rather than silently continued."""

    exit_code = 5
