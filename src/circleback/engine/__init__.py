"""The engine layer: the worker's lifecycle and loops, the facade, plugins, the heartbeat.

:mod:`.engine` starts and stops everything; :mod:`.pipeline` is the loop that
claims, works on and records items, with :mod:`.timers` (items waiting to
fall due), :mod:`.workers` (the tasks working on them) and :mod:`.recorder`
(results into transactions); :mod:`.checks` and :mod:`.deliveries` are what
the two loops work on; :mod:`.pacing` holds the loops' fixed values;
:mod:`.scheduler` is the facade that adds, lists and cancels jobs;
:mod:`.operations` is what operators ask of a database; :mod:`.plugins` finds
plugins; :mod:`.heartbeat` keeps leases fresh from a thread of its own.
"""
