"""The MariaDB/MySQL engine: server and ``my.cnf`` (:mod:`.server`), the initialised data
directory (:mod:`.cache`), loaders (:mod:`.init`), the preparing server (:mod:`.prepare`),
the state's description (:mod:`.describe`) and the binary-log reset (:mod:`.clean`).
The fixtures are in :mod:`pytest_services.mysql` and :mod:`.fixtures`."""
