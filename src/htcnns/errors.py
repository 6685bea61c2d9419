"""Exceptions a user can act on; the CLI prints their message as one line, never a traceback."""


class HtcnnsError(Exception):
    """Base class of every error that is the user's to fix (input data, weights, settings)."""


class InputError(HtcnnsError):
    """A case's files are missing, unreadable or inconsistent."""


class WeightsError(HtcnnsError):
    """A model folder is missing, tampered with, or does not match its manifest."""


class SettingsError(HtcnnsError):
    """A requested setting cannot be honoured on this machine (e.g. CUDA without a GPU)."""


class OutputError(HtcnnsError):
    """The output folder cannot be created, or a file in it cannot be written (read-only, disk full)."""


class CaseTimeout(BaseException):
    """A case ran past ``--case-timeout``.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` inside a library swallows it.
    """


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT asked the run to stop; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
