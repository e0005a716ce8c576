"""Host-wide reservations: kernel locks on files and lock tables, the registry of what this
process holds, TCP ports and X displays.  No pytest here; :mod:`pytest_services.locks` is
its public face."""
