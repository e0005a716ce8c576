"""Migrations of the shared app."""
