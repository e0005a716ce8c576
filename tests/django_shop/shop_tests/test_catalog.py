"""The catalog: slugs, tags, reports.

The products these tests share are created once for the module, outside any test's
transaction, with ``django_db_blocker``; the tests only read them or change them inside
their own rolled-back transaction.
"""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from catalog.models import Category, Product, Tag
from django.db import IntegrityError, connection, transaction
from django.db.models import Avg, Count, Max, Min, Sum

pytestmark = pytest.mark.django_db

OUTDOOR_PRODUCTS = [
    # name, slug, price, stock
    ("Trail tent", "trail-tent", Decimal("249.00"), 4),
    ("Camping stove", "camping-stove", Decimal("59.90"), 12),
    ("Head torch", "head-torch", Decimal("24.50"), 30),
]


@pytest.fixture(scope="module")
def catalogue(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        outdoor = Category.objects.create(name="Outdoor")
        products = [
            Product.objects.create(category=outdoor, name=name, slug=slug, price=price, stock=stock)
            for name, slug, price, stock in OUTDOOR_PRODUCTS
        ]
        camping = Tag.objects.create(name="Camping", slug="camping")
        light = Tag.objects.create(name="Lightweight", slug="lightweight")
        products[0].tags.add(camping, light)
        products[1].tags.add(camping)
        products[2].tags.add(light)
    yield SimpleNamespace(outdoor=outdoor, products=products, camping=camping, light=light)
    with django_db_blocker.unblock():
        Product.objects.filter(category__name="Outdoor").delete()
        Tag.objects.filter(slug__in=["camping", "lightweight"]).delete()
        Category.objects.filter(name="Outdoor").delete()


def test_module_rows_are_visible(catalogue):
    assert catalogue.outdoor.products.count() == 3
    tent = Product.objects.get(slug="trail-tent")
    assert tent.category.name == "Outdoor"
    assert tent.is_active
    assert tent.tax_rate is None


def test_changes_to_module_rows_are_rolled_back(catalogue):
    # Paired with test_module_rows_are_visible and the report tests: whichever runs
    # later still finds the original stock.
    assert Product.objects.get(slug="head-torch").stock == 30
    Product.objects.filter(slug="head-torch").update(stock=0)
    assert Product.objects.get(slug="head-torch").stock == 0


def test_duplicate_slug_is_rejected(catalogue):
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(
            category=catalogue.outdoor, name="Trail tent (copy)", slug="trail-tent", price=1
        )
    assert Product.objects.filter(slug="trail-tent").count() == 1


def test_tags_many_to_many(catalogue):
    camping_slugs = set(catalogue.camping.products.values_list("slug", flat=True))
    assert camping_slugs == {"trail-tent", "camping-stove"}
    both = Product.objects.filter(tags=catalogue.camping).filter(tags=catalogue.light)
    assert [p.slug for p in both] == ["trail-tent"]
    tent = Product.objects.get(slug="trail-tent")
    tent.tags.remove(catalogue.light)
    assert list(tent.tags.values_list("slug", flat=True)) == ["camping"]


def test_category_report_aggregates(catalogue):
    report = Category.objects.filter(name="Outdoor").aggregate(
        n_products=Count("products"),
        cheapest=Min("products__price"),
        dearest=Max("products__price"),
        units=Sum("products__stock"),
        average=Avg("products__price"),
    )
    assert report["n_products"] == 3
    assert report["cheapest"] == Decimal("24.50")
    assert report["dearest"] == Decimal("249.00")
    assert report["units"] == 46
    assert float(report["average"]) == pytest.approx(111.13, abs=0.01)

    per_tag = dict(
        Tag.objects.filter(slug__in=["camping", "lightweight"])
        .annotate(n=Count("products"))
        .values_list("slug", "n")
    )
    assert per_tag == {"camping": 2, "lightweight": 2}


def test_raw_sql_stock_report(catalogue):
    qn = connection.ops.quote_name
    sql = (
        f"SELECT c.{qn('name')}, COUNT(p.{qn('id')}), SUM(p.{qn('stock')})"
        f" FROM {qn(Category._meta.db_table)} c"
        f" INNER JOIN {qn(Product._meta.db_table)} p ON p.{qn('category_id')} = c.{qn('id')}"
        f" WHERE c.{qn('name')} = %s"
        f" GROUP BY c.{qn('name')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, ["Outdoor"])
        rows = cursor.fetchall()
    assert len(rows) == 1
    name, count, units = rows[0]
    # MySQL's SUM of integers is a DECIMAL, sqlite's an integer.
    assert (name, int(count), int(units)) == ("Outdoor", 3, 46)
