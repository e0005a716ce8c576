"""Test project A."""
