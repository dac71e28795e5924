"""The engine layer: the worker's lifecycle and loops, the facade, plugins, the heartbeat.

:mod:`.engine` starts and stops everything; :mod:`.pipeline` is the loop that
claims, works on and records items (checks and deliveries alike);
:mod:`.scheduler` is the facade that adds, lists and cancels jobs;
:mod:`.operations` is what operators ask of a database; :mod:`.plugins` finds
plugins; :mod:`.heartbeat` keeps leases fresh from a thread of its own.
"""
