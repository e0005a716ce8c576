"""The test database is in the state the migrations build, data migrations included."""

from __future__ import annotations

from decimal import Decimal

import pytest
from catalog.models import Category, Currency, TaxRate
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db

PROJECT_APPS = ("accounts", "catalog", "orders", "reviews", "billing")


def test_seeded_currencies():
    currencies = {c.code: c for c in Currency.objects.all()}
    assert {"EUR", "USD", "GBP", "CHF", "SEK", "JPY"} <= set(currencies)
    assert currencies["EUR"].symbol == "€"
    assert currencies["JPY"].decimal_places == 0
    # Fixed afterwards by a RunSQL migration.
    assert currencies["CHF"].symbol == "CHF"


def test_seeded_categories_form_a_tree():
    electronics = Category.objects.get(name="Electronics")
    assert sorted(electronics.children.values_list("name", flat=True)) == ["Laptops", "Phones"]
    roots = set(Category.objects.filter(parent=None).values_list("name", flat=True))
    assert {"Books", "Electronics", "Garden", "Home & Kitchen", "Toys"} <= roots


def test_seeded_tax_rates():
    assert TaxRate.objects.filter(country__in=["NL", "DE", "BE", "FR"]).count() == 8
    assert TaxRate.objects.get(country="NL", name="standard").rate == Decimal("21.00")
    assert TaxRate.objects.get(country="FR", name="reduced").rate == Decimal("5.50")


def test_seeded_staff_groups():
    names = set(Group.objects.values_list("name", flat=True))
    assert {"Customer service", "Warehouse", "Catalog editors"} <= names


def test_every_migration_is_applied():
    executor = MigrationExecutor(connection)
    targets = executor.loader.graph.leaf_nodes()
    assert executor.migration_plan(targets) == []
    applied = {key for key in executor.recorder.applied_migrations() if key[0] in PROJECT_APPS}
    on_disk = {key for key in executor.loader.disk_migrations if key[0] in PROJECT_APPS}
    assert applied == on_disk
    assert len(on_disk) >= 30
