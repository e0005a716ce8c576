"""The process engine: running commands and services in watched process groups, waiting for
readiness, stopping groups, the watchdog that outlives nothing, private folders, messages.
No pytest here; :mod:`pytest_services.process` is its public face."""
