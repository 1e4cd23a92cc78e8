"""The reconciler: frees addresses whose pods are gone, on a cron schedule.

* :mod:`.cron` -- the 5-field cron rule (``cronsim`` does the calendar math);
* :mod:`.schedule` -- where the expression comes from, and noticing changes;
* :mod:`.liveness` -- pluggable sources that say whether an allocation is in use;
* :mod:`.run` -- one pass: decide, then release, logging JSON lines;
* :mod:`.daemon` -- the long-running loop and its metrics;
* :mod:`.commands` -- ``cni-ipam reconcile`` and ``cni-ipam reconciler``.

Nothing here is imported by the plugin executables.
"""
