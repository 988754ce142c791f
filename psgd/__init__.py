"""psgd: distributed and federated SGD with plug-in communication codecs.

Users import the codec API from here::

    from psgd import Codec, netEncapsulation, BlockWeight, GlobalSettings, Parameter_Server

and run jobs from Python with ``psgd.run(codec=..., node_count=...)`` (``psgd.cluster.api``,
loaded on first use so that importing the contract stays light).
"""

from typing import Any

from psgd.codec import BlockWeight, Codec, InvalidArguments, Parameter_Server, netEncapsulation
from psgd.errors import CodecError, CodecNotFound, ConfigError, PsgdError
from psgd.settings import GlobalSettings

__version__ = "0.1.0"

__all__ = [
    "BlockWeight",
    "Codec",
    "CodecError",
    "CodecNotFound",
    "ConfigError",
    "GlobalSettings",
    "InvalidArguments",
    "Parameter_Server",
    "PsgdError",
    "netEncapsulation",
    "run",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # psgd.run lives with the cluster code; the contract must not load it at import.
    if name == "run":
        from psgd.cluster.api import run

        return run
    raise AttributeError(f"module 'psgd' has no attribute {name!r}")
