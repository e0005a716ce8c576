"""Models of app_a."""

from django.db import models


class Note(models.Model):
    """A row that only project A's database has a table for."""

    text = models.CharField(max_length=100)
