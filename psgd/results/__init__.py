"""What a run leaves behind: the run folder, CSV records, ``summary.json`` and plots.

Owns: ``NodeReport``/``RunResult`` (what a job produced), the run folder and atomic
writes, the summary and per-node records, and the PNG plot.

May import: the contract only (``psgd.job``, ``psgd.errors``); ``psgd.train`` and
``psgd.cluster`` write through it.
"""
