"""Migrations of app_a."""
