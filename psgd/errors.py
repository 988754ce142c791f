"""The whole psgd exception hierarchy: one class per kind of failure a user can meet."""

from __future__ import annotations


class PsgdError(Exception):
    """Base class of every error psgd raises on purpose."""


class ConfigError(PsgdError):
    """A setting, option or configuration file is invalid (the message names it)."""


class CodecNotFound(ConfigError):
    """A codec name could not be resolved (the message says what was looked up where)."""


class CodecError(PsgdError):
    """A codec broke the codec contract or raised while running."""


class DatasetError(PsgdError):
    """A dataset file is missing, corrupt or of the wrong shape."""


class ModelError(PsgdError):
    """A model file or model architecture is invalid."""


class WireError(PsgdError):
    """Base class of errors at the message encoding boundary."""


class EncodeError(WireError):
    """Codec content cannot be put on the wire (the message names the offending part)."""


class MalformedMessage(WireError):
    """Bytes received do not decode to a valid psgd message."""


class SyncTimeout(PsgdError):
    """SSGD waited for a codec result past its timeout, even after the codec's retry."""


class Diverged(PsgdError):
    """Training produced a non-finite loss or weights (the message names node and round)."""


class JobFailed(PsgdError):
    """A job did not complete (the message says which node failed and why)."""
