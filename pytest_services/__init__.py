"""Real service processes for pytest, isolated per session and per xdist worker."""

__version__ = "3.1.0.dev0"
