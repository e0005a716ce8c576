"""Shared services kept warm between runs (``--services-keep``): store, leases, keeper."""
