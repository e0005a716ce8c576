"""Models of the shared app."""

from django.db import models


class Entry(models.Model):
    """A row whose table exists in the databases of both projects."""

    written_by = models.CharField(max_length=10)
