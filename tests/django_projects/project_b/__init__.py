"""Test project B."""
