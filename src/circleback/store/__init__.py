"""The store layer: jobs, outbox and workers on SQLite or PostgreSQL.

:mod:`.store` is the :class:`Store` the engine speaks to in domain verbs
(:mod:`.jobs`, :mod:`.outbox`, :mod:`.workers`); :mod:`.database` runs their
transactions; :mod:`.schema` and :mod:`.migrate` hold the tables and their
migrations; :mod:`.wakeups` listens for other workers' changes on PostgreSQL.
Nothing above the engine imports this package.
"""
