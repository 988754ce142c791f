"""``GlobalSettings``: what a codec knows of the cluster, and the block assignments.

A job's training data is cut into blocks; each block is held by ``redundancy`` nodes.
``iid`` gives a block to every combination of ``redundancy`` nodes (C(n, r) blocks);
``duplicate`` lets every group of ``redundancy`` consecutive nodes share one block (n / r
blocks). With redundancy 1 both give node i block i.
"""

from __future__ import annotations

import itertools
import logging
import numbers
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psgd.job import JobSpec

from psgd.errors import ConfigError

__all__ = [
    "ASSIGNMENTS",
    "JobLogger",
    "MAX_BLOCK_COUNT",
    "MAX_BLOCK_HOLDINGS",
    "MAX_NODE_COUNT",
    "BlockAssignment",
    "GlobalSettings",
    "check_assignment",
    "make_assignment",
]

#: The most worker nodes a job may have. Federated jobs run many virtual clients per daemon
#: (some 10,000 in a job), so the bound is generous; it only stops absurd requests.
MAX_NODE_COUNT = 100_000
#: The most data blocks an assignment may make (``iid`` makes C(node_count, redundancy)).
MAX_BLOCK_COUNT = 100_000
#: The most (block, holder) pairs an assignment may list: ``block_count * redundancy``.
#: Both directions of the assignment are kept in memory, so this bounds its size (~15 MB).
MAX_BLOCK_HOLDINGS = 200_000


class BlockAssignment:
    """Which node holds which block.

    Parameters
    ----------
    node_count:
        Number of worker nodes (ids 0..node_count-1).
    block_2_node:
        For each block id, the list of nodes that hold it.
    """

    def __init__(self, node_count: int, block_2_node: list[list[int]]) -> None:
        self.node_count = node_count
        self.block_2_node = block_2_node
        self.node_2_block: list[list[int]] = [[] for _ in range(node_count)]
        for block_id, holders in enumerate(block_2_node):
            for node in holders:
                self.node_2_block[node].append(block_id)

    @property
    def block_count(self) -> int:
        return len(self.block_2_node)


def _iid(node_count: int, redundancy: int) -> BlockAssignment:
    combos = itertools.combinations(range(node_count), redundancy)
    return BlockAssignment(node_count, [list(c) for c in combos])


def _duplicate(node_count: int, redundancy: int) -> BlockAssignment:
    if node_count % redundancy:
        raise ConfigError(
            f"--assignment duplicate: node_count ({node_count}) must be a multiple of "
            f"redundancy ({redundancy})"
        )
    groups = [list(range(g, g + redundancy)) for g in range(0, node_count, redundancy)]
    return BlockAssignment(node_count, groups)


ASSIGNMENTS = {"iid": _iid, "duplicate": _duplicate}


def _combinations_over(n: int, k: int, limit: int) -> int:
    """C(n, k), or the first partial product past ``limit`` (never a huge computation)."""
    k = min(k, n - k)
    count = 1
    for i in range(1, k + 1):
        count = count * (n - k + i) // i  # exact at every step; grows with i while k <= n/2
        if count > limit:
            return count
    return count


def check_assignment(name: str, node_count: int, redundancy: int) -> int:
    """Check an assignment's arguments and bounds without building it; its block count.

    Raises ``ConfigError`` naming the option and the bound (``MAX_NODE_COUNT``,
    ``MAX_BLOCK_COUNT``, ``MAX_BLOCK_HOLDINGS``), so a job asking for an assignment too large
    to hold is refused at once, wherever it is checked.
    """
    for option, value in (("node_count", node_count), ("redundancy", redundancy)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{option} must be a whole number, got {value!r:.40}")
    if node_count < 1:
        raise ConfigError(f"node_count must be >= 1, got {node_count}")
    if node_count > MAX_NODE_COUNT:
        raise ConfigError(
            f"node_count {node_count} exceeds the limit of {MAX_NODE_COUNT} nodes per job "
            "(psgd.settings.MAX_NODE_COUNT)"
        )
    if not 1 <= redundancy <= node_count:
        raise ConfigError(f"redundancy must be in 1..node_count ({node_count}), got {redundancy}")
    if name == "iid":
        blocks = _combinations_over(node_count, redundancy, MAX_BLOCK_COUNT)
        made = f"C({node_count}, {redundancy})"
    elif name == "duplicate":
        blocks, made = node_count // redundancy, f"{node_count} / {redundancy}"
    else:
        raise ConfigError(
            f"--assignment: unknown assignment {name!r:.40}; expected one of {sorted(ASSIGNMENTS)}"
        )
    if blocks > MAX_BLOCK_COUNT:
        raise ConfigError(
            f"--assignment {name} with --redundancy {redundancy} over {node_count} nodes makes "
            f"{made} > {MAX_BLOCK_COUNT} blocks, over the limit (psgd.settings.MAX_BLOCK_COUNT); "
            "lower --redundancy or use --assignment duplicate"
        )
    if blocks * redundancy > MAX_BLOCK_HOLDINGS:
        raise ConfigError(
            f"--assignment {name} with --redundancy {redundancy} over {node_count} nodes gives "
            f"{blocks} blocks x {redundancy} holders = {blocks * redundancy} holdings, over the "
            f"limit of {MAX_BLOCK_HOLDINGS} (psgd.settings.MAX_BLOCK_HOLDINGS); lower --redundancy"
        )
    return blocks


def make_assignment(name: str, node_count: int, redundancy: int) -> BlockAssignment:
    """Build the named block assignment, checking its arguments and bounds first."""
    check_assignment(name, node_count, redundancy)
    return ASSIGNMENTS[name](node_count, redundancy)


class JobLogger:
    """Parallel-SGD's job logger (``GlobalSettings.global_logger()``): lines go to the node's
    log (the ``psgd.codec`` logger, which psgd brings back into the run folder)."""

    def __init__(self) -> None:
        self._log = logging.getLogger("psgd.codec")

    def log_message(self, message: str) -> None:
        """Write an informational line."""
        self._log.info("%s", message)

    def log_error(self, message: str) -> None:
        """Write an error line."""
        self._log.error("%s", message)


class GlobalSettings:
    """The cluster as a codec sees it (``GlobalSettings.get_default()``).

    Attributes
    ----------
    node_count, nodes:
        Number of workers and their ids ``[0, ..., node_count-1]``.
    redundancy:
        How many nodes hold each block.
    block_count, blocks:
        Number of blocks and their ids.
    node_2_block, block_2_node:
        ``node_2_block[node]`` lists the blocks a node holds; ``block_2_node[block]`` the
        nodes that hold a block.
    node_samples, learn_rate, batch_size, sync, exchange, optimizer, seed, rounds, local_epochs:
        psgd extensions: training samples per worker and the job's settings.
    """

    _default: GlobalSettings | None = None
    _params: dict[str, Any] = {}
    _params_read: set[str] = set()
    _lock = threading.Lock()
    _logger = JobLogger()
    #: Parallel-SGD's name for the job's ``--param`` values (None between jobs), read directly
    #: by some codecs; ``get_params`` is the way that also records which keys were read.
    global_parameters: dict[str, Any] | None = None
    #: Parallel-SGD's attribute names behind ``get_default()`` and ``global_logger()``.
    deprecated_default_settings: GlobalSettings | None = None
    deprecated_global_logger: JobLogger = _logger

    def __init__(
        self,
        node_count: int,
        redundancy: int = 1,
        assignment: str = "iid",
        params: Mapping[str, Any] | None = None,
        node_samples: list[int] | None = None,
        learn_rate: float = 0.0,
        batch_size: int = 0,
    ) -> None:
        self.assignment_name = assignment
        self.block_assignment = make_assignment(assignment, node_count, redundancy)
        self.node_count = node_count
        self.redundancy = redundancy
        self.params: dict[str, Any] = dict(params or {})
        #: Training samples each worker holds (for sample-count weighting), when known.
        self.node_samples: list[int] = list(node_samples or [])
        #: The job's learning rate and per-node batch size (0 when unknown).
        self.learn_rate = learn_rate
        self.batch_size = batch_size
        #: The job's sync mode, exchange mode, local optimizer and seed ("" / 0 when unknown).
        self.sync = ""
        self.exchange = ""
        self.optimizer = ""
        self.seed = 0
        #: Federated jobs: rounds to run (0 when not a round job) and local epochs per round
        #: (0.0 when not given: the codec's own default).
        self.rounds = 0
        self.local_epochs = 0.0

    @property
    def nodes(self) -> list[int]:
        return list(range(self.node_count))

    @property
    def block_count(self) -> int:
        return self.block_assignment.block_count

    @property
    def blocks(self) -> list[int]:
        return list(range(self.block_count))

    @property
    def node_2_block(self) -> list[list[int]]:
        return self.block_assignment.node_2_block

    @property
    def block_2_node(self) -> list[list[int]]:
        return self.block_assignment.block_2_node

    @classmethod
    def for_job(cls, spec: JobSpec, node_samples: list[int] | None = None) -> GlobalSettings:
        """The settings codecs see for a job."""
        settings = cls(
            spec.node_count, spec.redundancy, spec.assignment, spec.params, node_samples,
            spec.learn_rate, spec.batch_size,
        )  # fmt: skip
        settings.sync, settings.exchange = spec.sync, spec.exchange
        settings.optimizer, settings.seed = spec.optimizer, spec.seed
        settings.rounds = spec.rounds or 0
        settings.local_epochs = float(spec.local_epochs or 0.0)
        return settings

    def get_adversary(self, block_id: int) -> list[int]:
        """The nodes that do not hold ``block_id``: whom to send that block to."""
        holders = set(self.block_2_node[block_id])
        return [node for node in range(self.node_count) if node not in holders]

    def __repr__(self) -> str:
        return (
            f"GlobalSettings(node_count={self.node_count}, redundancy={self.redundancy}, "
            f"assignment={self.assignment_name!r}, block_count={self.block_count})"
        )

    @classmethod
    def set_default(cls, settings: GlobalSettings) -> None:
        """Make ``settings`` the cluster every codec in this process sees.

        psgd calls it before any codec module of the job is executed, so class bodies that
        read ``get_params`` or ``get_default()`` see this job's values.
        """
        with cls._lock:
            if cls._default is not settings:  # the same job again keeps the keys read so far
                cls._params_read = set()
            cls._default = settings
            cls._params = settings.params
            cls.global_parameters = settings.params
            cls.deprecated_default_settings = settings

    @classmethod
    def clear_default(cls) -> None:
        """Forget the job's settings (it ended): nothing of it is visible to the next job."""
        with cls._lock:
            cls._default = None
            cls._params = {}
            cls._params_read = set()
            cls.global_parameters = None
            cls.deprecated_default_settings = None

    @classmethod
    def get_default(cls) -> GlobalSettings:
        """The current cluster's settings (set by the framework before codec modules load).

        Outside a job it returns None, as Parallel-SGD does (typed as the settings because
        a codec only ever runs inside a job).
        """
        return cls._default  # type: ignore[return-value]

    @classmethod
    def global_logger(cls) -> JobLogger:
        """Parallel-SGD's logger: ``GlobalSettings.global_logger().log_message(text)``."""
        return cls._logger

    @classmethod
    def get_params(cls, key: str, default: Any = 0) -> Any:
        """A job-level extra parameter (``--param key=value``), or ``default``.

        Every key asked for is recorded (``params_read``), so a given key no codec reads can
        be named when the job ends.
        """
        cls._params_read.add(key)
        return cls._params.get(key, default)

    @classmethod
    def params_read(cls) -> set[str]:
        """The keys ``get_params`` was asked for since the current settings were set."""
        return set(cls._params_read)
