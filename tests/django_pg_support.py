"""The small PostgreSQL Django project of tests/test_django_postgresql.py.

Its data migration counts its runs in the file ``$MIGRATE_CALLS``; its models use what only
PostgreSQL has: an ``ArrayField``, ``JSONField`` key lookups, a ``citext`` column (extension
``citext``) and trigram similarity (extension ``pg_trgm``).
"""

from __future__ import annotations

SETTINGS = """
SECRET_KEY = "not secret"
INSTALLED_APPS = [
    "django.contrib.contenttypes", "django.contrib.auth", "django.contrib.postgres", "things",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql", "HOST": "db.example.com", "PORT": "5432",
        "NAME": "shop", "USER": "shop", "PASSWORD": "secret",
        "OPTIONS": {"options": "-c statement_timeout=12345", "sslmode": "require"},
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""

MODELS = """
from django.contrib.postgres.fields import ArrayField
from django.db import models


class CIEmailField(models.EmailField):
    def db_type(self, connection):
        return "citext"


class Thing(models.Model):
    name = models.CharField(max_length=50, unique=True)
    email = CIEmailField(default="")
    tags = ArrayField(models.CharField(max_length=20), default=list)
    data = models.JSONField(default=dict)
"""

INITIAL = """
import django.contrib.postgres.fields
import things.models
from django.contrib.postgres.operations import CreateExtension, TrigramExtension
from django.db import migrations, models

class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        CreateExtension("citext"),
        TrigramExtension(),
        migrations.CreateModel(
            name="Thing",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=50, unique=True)),
                ("email", things.models.CIEmailField(default="", max_length=254)),
                ("tags", django.contrib.postgres.fields.ArrayField(
                    base_field=models.CharField(max_length=20), default=list, size=None)),
                ("data", models.JSONField(default=dict)),
            ],
        ),
    ]
"""

SEED = """
import os
from django.db import migrations

def seed(apps, schema_editor):
    with open(os.environ["MIGRATE_CALLS"], "a") as calls:
        calls.write("seed\\n")
    things = apps.get_model("things", "Thing").objects.using(schema_editor.connection.alias)
    things.create(name="seeded", email="Seeded@Example.com", tags=["red", "blue"],
                  data={"colour": {"name": "red"}})

class Migration(migrations.Migration):
    dependencies = [("things", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
"""

TESTS = """
import os
import pytest
from django.db import connection
from things.models import Thing

SEEDED = ["seeded"]

def names():
    return list(Thing.objects.order_by("id").values_list("name", flat=True))

def test_on_postgresql_with_migrated_rows(db):
    assert connection.vendor == "postgresql"
    assert os.path.isdir(connection.settings_dict["HOST"])
    assert names() == SEEDED
    Thing.objects.create(name="rolled back")

def test_postgresql_only_features(db):
    assert Thing.objects.get(email="seeded@EXAMPLE.com").name == "seeded"
    assert Thing.objects.filter(tags__contains=["red"]).count() == 1
    assert Thing.objects.filter(data__colour__name="red").count() == 1
    assert Thing.objects.filter(name__trigram_similar="seedd").count() == 1
    with connection.cursor() as cursor:  # the project's OPTIONS stay, sslmode goes
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone() == ("12345ms",)

def test_rolled_back(db):
    assert not Thing.objects.filter(name="rolled back").exists()

def test_the_blocker(django_db_blocker):
    with pytest.raises(RuntimeError, match="Database access not allowed"):
        Thing.objects.count()
    with django_db_blocker.unblock():
        assert connection.vendor == "postgresql"

@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_serialized_rollback_removes():
    assert names() == SEEDED
    Thing.objects.all().delete()

def test_serialized_rollback_brings_the_migrated_rows_back(
    django_db_serialized_rollback, transactional_db
):
    assert names() == SEEDED

@pytest.mark.django_db(transaction=True)
def test_transactional():
    Thing.objects.create(name="committed")
    assert Thing.objects.filter(name="committed").exists()

def test_migrated_rows_back_after_a_flush(postgresql_clean, transactional_db):
    assert names() == SEEDED
"""
