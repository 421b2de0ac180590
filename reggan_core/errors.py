"""Project errors: one line that names the problem and the fix."""
from __future__ import annotations


class RegGANError(ValueError):
    """Base class for bad input: message = what is wrong + what to do."""


class DataError(RegGANError):
    """A dataset folder, image or category that cannot be used."""


class NoFaceError(DataError):
    """No face was found in an image that had to be aligned."""


class ConfigError(RegGANError):
    """A configuration key or value that is not valid."""
