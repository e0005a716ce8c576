"""App installed in test project B only."""
