"""Models of app_b."""

from django.db import models


class Item(models.Model):
    """A row that only project B's database has a table for."""

    name = models.CharField(max_length=100)
