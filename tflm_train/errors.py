"""The one exception base class for problems a user can fix.

Everything raised because of the user's input (a corrupt .tflite, an
unsupported operator, data of the wrong shape, a state of another model, a
bad option) derives from TflmTrainError, so a program catches that one class
and the CLI turns it into one line and exit code 2. Anything else is a bug.
"""

from __future__ import annotations


class TflmTrainError(Exception):
    """A problem with the input or the options, explained in the message."""


class UserError(TflmTrainError):
    """A bad command-line option or file path (the CLI's own checks)."""


__all__ = ["TflmTrainError", "UserError"]
