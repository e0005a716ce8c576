"""The shop project: accounts, catalog, orders, reviews and billing."""
