"""The PostgreSQL engine: the programs and their settings (:mod:`.server`), the initialised
cluster (:mod:`.cache`), loaders (:mod:`.init`), the preparing server (:mod:`.prepare`), the
state's description (:mod:`.describe`) and the reset from the write-ahead log (:mod:`.clean`).
The fixtures are in :mod:`pytest_services.postgresql` and :mod:`.fixtures`."""
