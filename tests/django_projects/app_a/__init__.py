"""App installed in test project A only."""
