"""Migrations of app_b."""
