"""What a run leaves behind and shows: the run folder, CSV records, ``summary.json``, plots.

Owns: ``NodeReport``/``RunResult`` (what a job produced), the run folder and atomic writes,
the summary and per-node records, reading a run folder back (``runs``), the figures drawn with
matplotlib (``plot``), comparisons of runs (``compare``) and the progress display of a running
job (``progress``).

May import: the contract only (``psgd.job``, ``psgd.errors``); ``psgd.train`` and
``psgd.cluster`` write through it.
"""
