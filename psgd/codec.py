"""The codec contract: ``Codec``, ``netEncapsulation``, ``BlockWeight`` and ``Parameter_Server``.

These names and their semantics are kept exactly as Parallel-SGD defines them, so a codec
written for Parallel-SGD runs here with only its import lines changed.
"""

from __future__ import annotations

import logging
import threading
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from psgd.errors import CodecError

__all__ = [
    "BlockWeight",
    "Codec",
    "InvalidArguments",
    "Parameter_Server",
    "netEncapsulation",
    "collect_packages",
]

T = TypeVar("T")

#: Node id of the parameter server: negative, distinct from the workers' ids 0..N-1.
Parameter_Server: int = -2

_log = logging.getLogger(__name__)


class InvalidArguments(CodecError):
    """Parallel-SGD's name for a package with bad targets (a ``CodecError`` here)."""


class BlockWeight:
    """What the trainer hands a codec after each batch: one block's content.

    Parameters
    ----------
    content:
        The array computed on that block (a gradient delta or the weights, by optimizer type).
    block_id:
        The id of the data block it was computed on (see ``GlobalSettings.blocks``).
    """

    __slots__ = ("block_id", "content")

    def __init__(self, content: Any, block_id: int) -> None:
        self.content = content
        self.block_id = block_id

    @property
    def company(self) -> set[int]:
        """The nodes holding this block (an older Parallel-SGD attribute), from the settings."""
        from psgd.settings import GlobalSettings

        return set(GlobalSettings.get_default().block_2_node[self.block_id])

    @property
    def adversary(self) -> set[int]:
        """The nodes not holding this block: whom to send it to (older Parallel-SGD)."""
        from psgd.settings import GlobalSettings

        return set(GlobalSettings.get_default().get_adversary(self.block_id))

    def __repr__(self) -> str:
        shape = getattr(self.content, "shape", None)
        return f"BlockWeight(block_id={self.block_id}, shape={shape})"


class netEncapsulation(Generic[T]):
    """A package a codec wants sent: its targets and its content.

    Parameters
    ----------
    send_to_who:
        One node id, or a list, tuple or set of node ids (``Parameter_Server`` included).
    content:
        Any nesting of lists, tuples, dicts, numbers, strings, bytes and numpy arrays.
    """

    __slots__ = ("__handled", "__packages", "__sent", "__target")

    def __init__(self, send_to_who: int | Iterable[int], content: T) -> None:
        self.__target = _normalise_targets(send_to_who)
        self.__packages = content
        self.__handled = False
        self.__sent = False

    def target(self) -> list[int]:
        """The node ids this package goes to."""
        return self.__target

    @property
    def content(self) -> T:
        """What is sent; receivers get it in ``receive_blocks`` with the same structure."""
        self.__handled = True
        return self.__packages

    @content.setter
    def content(self, value: T) -> None:
        self.__packages = value

    @property
    def has_handled(self) -> bool:
        """True once ``content`` was read (by psgd when sending, or by the codec)."""
        return self.__handled

    @property
    def has_sent(self) -> bool:
        """True once psgd handed the package to the network."""
        return self.__sent

    def _mark_sent(self) -> None:
        self.__sent = True

    def __repr__(self) -> str:
        return f"netEncapsulation(target={self.__target}, content={type(self.__packages).__name__})"


def _normalise_targets(send_to_who: Any) -> list[int]:
    if isinstance(send_to_who, bool):
        raise InvalidArguments(
            f"netEncapsulation: target must be a node id, got bool {send_to_who}"
        )
    if isinstance(send_to_who, int):
        return [int(send_to_who)]
    if isinstance(send_to_who, (list, tuple, set, frozenset)):
        targets = []
        for node in send_to_who:
            if isinstance(node, bool) or not isinstance(node, int):
                raise InvalidArguments(
                    f"netEncapsulation: every target must be an int node id, "
                    f"got {type(node).__name__} {node!r} in {send_to_who!r}"
                )
            targets.append(int(node))
        return targets
    if hasattr(send_to_who, "__index__"):  # numpy integers
        return [int(send_to_who)]
    raise InvalidArguments(
        "netEncapsulation: target must be an int or a list, tuple or set of ints, "
        f"got {type(send_to_who).__name__}"
    )


def _add(old: Any, new: Any) -> Any:
    return old + new


class Codec(metaclass=ABCMeta):
    """Base class of every communication algorithm.

    A codec decides what to send, to whom, and how to merge what arrives. It never touches
    sockets, threads or clocks: "who gets what" is the return value of ``update_blocks`` and
    ``receive_blocks`` (None, one ``netEncapsulation`` or an iterable of them), and the merged
    result is published with ``set_result``. The framework calls ``update_blocks`` and
    ``receive_blocks`` of one instance one at a time; ``set_result`` is safe from any thread.

    Optional class attributes: ``exchange = "params"`` (the codec merges weights, not steps)
    and ``waits_for_model = True`` (a round-based client: the node trains only while every
    layer codec holds a result, i.e. a round's model, and is idle, costing nothing, between
    the package that ends its round and the next model it is sent). A round-based client may
    also declare ``keeps_optimizer_state = True``: its local optimizer's state (momentum, Adam's
    moments) is kept between its rounds instead of starting afresh each round. A round-based
    server codec may define ``round_deadline(self)``: called when a round's deadline passes
    (``--round-deadline``), it closes the round with what arrived and may return packages.

    Parameters
    ----------
    node_id:
        This node's id: 0..N-1 for workers, ``Parameter_Server`` for the server.
    """

    #: A round-based client: trains only while it holds a model (see the class docstring).
    waits_for_model: bool = False
    #: A round-based client whose optimizer state persists between its rounds.
    keeps_optimizer_state: bool = False

    def __init__(self, node_id: int) -> None:
        self.__node_id = node_id
        self.__updated_weight_buffer: Any = None
        self.__update_mutex = threading.Lock()
        self.__logger = logging.getLogger(f"psgd.codec.{type(self).__name__}")

    @property
    def node_id(self) -> int:
        """This node's id."""
        return self.__node_id

    @abstractmethod
    def update_blocks(self, block_weight: BlockWeight) -> Any:
        """Called after each batch with this node's content for one block.

        Returns None, a ``netEncapsulation`` or an iterable of them.
        """

    @abstractmethod
    def receive_blocks(self, content: Any) -> Any:
        """Called with the content of each package sent to this node.

        Returns None, a ``netEncapsulation`` or an iterable of them.
        """

    @abstractmethod
    def dispose(self) -> None:
        """Release whatever the codec holds; called once when the job ends."""

    def do_something_to_save_yourself(self) -> Any:
        """Called once when SSGD waited too long for a result; may return packages to resend."""
        return None

    def set_result(self, content: Any, operation: Callable[[Any, Any], Any] | None = None) -> None:
        """Publish (part of) the merged result; thread-safe.

        The buffer becomes ``operation(old, content)``; on an empty buffer ``old`` is
        ``np.asarray(0.0)``, as in Parallel-SGD. Without ``operation`` the merge is
        ``old + content`` (an empty buffer simply takes ``content``).
        """
        with self.__update_mutex:
            old = self.__updated_weight_buffer
            if operation is not None:
                if old is None:
                    import numpy  # not at import: psgd.blas_env must run before numpy loads

                    old = numpy.asarray(0.0)
                self.__updated_weight_buffer = operation(old, content)
            elif old is None:
                self.__updated_weight_buffer = content
            else:
                self.__updated_weight_buffer = _add(old, content)

    def is_done(self) -> bool:
        """True when a result waits in the buffer."""
        return self.__updated_weight_buffer is not None

    def get_result(self) -> Any:
        """Return the merged result and clear the buffer.

        Raises
        ------
        CodecError
            When there is no result (check ``is_done()`` first), as Parallel-SGD asserts.
        """
        with self.__update_mutex:
            result = self.__updated_weight_buffer
            self.__updated_weight_buffer = None
        if result is None:
            raise CodecError(
                f"{type(self).__name__}.get_result(): no result in the buffer "
                "(call it only when is_done())"
            )
        return result

    def record(self, message: str) -> None:
        """Write a line to this node's log."""
        self.__logger.info("node %s: %s", self.__node_id, message)

    def __getstate__(self) -> dict[str, Any]:
        # A parked virtual client's codecs travel to the executor that runs it: the lock
        # and the logger are made anew there.
        state = self.__dict__.copy()
        state.pop("_Codec__update_mutex", None)
        state.pop("_Codec__logger", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__update_mutex = threading.Lock()
        self.__logger = logging.getLogger(f"psgd.codec.{type(self).__name__}")


def collect_packages(codec: Codec, method: str, returned: Any) -> list[netEncapsulation]:
    """Check what a codec method returned and flatten it to a list of packages.

    Raises
    ------
    CodecError
        When ``returned`` is neither None, a ``netEncapsulation`` nor an iterable of them;
        the message names the class, the method and the type returned.
    """
    if returned is None:
        return []
    if isinstance(returned, netEncapsulation):
        return [returned]
    where = f"{type(codec).__name__}.{method}"
    if isinstance(returned, (str, bytes, dict)) or not isinstance(returned, Iterable):
        raise CodecError(
            f"{where} returned {type(returned).__name__}; expected None, a netEncapsulation "
            "or an iterable of netEncapsulation"
        )
    packages = []
    for item in returned:
        if item is None:
            continue
        if not isinstance(item, netEncapsulation):
            raise CodecError(
                f"{where} returned an iterable containing {type(item).__name__}; "
                "every item must be a netEncapsulation"
            )
        packages.append(item)
    return packages
