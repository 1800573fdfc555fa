"""The one error type users see. The CLI prints it as a single line and exits with the code of its kind: 3 for
bad input or data, 4 for integrity, 5 for divergence (2 is click's usage errors; the table is cliopts.EXIT_CODES).

`redact` removes anything that looks like a secret (a Hugging Face token, `Bearer <x>`) from a text: every error,
log line and state file that ticketkit writes goes through it, since a server may echo the Authorization header.
"""
import re

_SECRETS = (
    (re.compile(r"(?i)\b(bearer)\s+[^\s'\"),;]+"), r"\1 ***"),
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), "hf_***"),  # HF tokens: hf_ + letters and digits (not hf_hub_download)
    (re.compile(r"(?i)\b(token|authorization|api[_-]?key)([\"']?\s*[:=]\s*[\"']?)(?!\*\*\*|bearer\b)[A-Za-z0-9_\-.]{16,}"), r"\1\2***"),
)


def shorten(text: str, width: int = 160) -> str:
    """`text` on one line, cut at a word boundary with " ..." when longer than `width` (never mid-word)."""
    import textwrap

    return textwrap.shorten(" ".join(str(text).split()), width, placeholder=" ...") or str(text)[:width]


def redact(text: str) -> str:
    """`text` with tokens replaced by ***: hf_<chars> and `Bearer <x>` (any case), and long values after token=."""
    for rx, sub in _SECRETS:
        text = rx.sub(sub, text)
    return text


class TicketkitError(Exception):
    """A problem the user can fix. The message names what is wrong and how to fix it (never a secret: redacted)."""

    exit_code = 3

    def __init__(self, *args):
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class IntegrityError(TicketkitError):
    """An artifact on disk is corrupt, truncated or tampered with."""

    exit_code = 4


class TrainingDiverged(TicketkitError):
    """Loss became NaN or inf; the level is stopped and reported rather than silently continued."""

    exit_code = 5
