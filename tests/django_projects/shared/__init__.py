"""App installed in both test projects."""
