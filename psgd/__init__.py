"""psgd: distributed and federated SGD with plug-in communication codecs.

Users import the codec API from here::

    from psgd import Codec, netEncapsulation, BlockWeight, GlobalSettings, Parameter_Server
"""

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
    "__version__",
]
