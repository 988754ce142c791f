"""Where jobs run: worker daemons, the submitter, ``--local`` clusters, worker lists.

Owns: the daemon, its control port, the preparation and run of a job inside it, the
submitter that ships jobs and follows them, ``--local`` daemon processes, ``worker.json``
parsing, status probes, ``--detach``, and ``run_job``, which sends a job in-process
(``psgd.train``) or to daemons.

May import: ``psgd.train``, ``psgd.results``, ``psgd.net``, ``psgd.algorithms``, ``psgd.nn``,
``psgd.data`` and the contract. Only ``psgd.cli`` imports it.
"""
