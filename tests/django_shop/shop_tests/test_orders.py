"""Orders and order lines: foreign keys to accounts and catalog, totals, time zones."""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from accounts.models import User
from django.db import IntegrityError, transaction
from django.db.models import DecimalField, ExpressionWrapper, F, Sum
from django.utils import timezone
from orders.models import Order, OrderLine
from orders.services import order_number, place_order

pytestmark = pytest.mark.django_db

LINE_TOTAL = ExpressionWrapper(
    F("unit_price") * F("quantity"), output_field=DecimalField(max_digits=12, decimal_places=2)
)


def test_order_total_in_python_and_sql(cart):
    # 2 x 39.95 + 3 x 4.50
    assert cart.total == Decimal("93.40")
    in_sql = OrderLine.objects.filter(order=cart).aggregate(total=Sum(LINE_TOTAL))["total"]
    assert in_sql == Decimal("93.40")
    per_order = Order.objects.annotate(
        total_sql=Sum(
            F("lines__unit_price") * F("lines__quantity"),
            output_field=DecimalField(max_digits=12, decimal_places=2),
            default=0,
        )
    ).get(pk=cart.pk)
    assert per_order.total_sql == Decimal("93.40")


def test_one_line_per_product(cart, product):
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderLine.objects.create(order=cart, product=product, quantity=1, unit_price=1)
    assert cart.lines.count() == 2


def test_queries_across_apps(cart, customer, other_customer):
    buyers = User.objects.filter(orders__lines__product__category__name="Board games")
    assert set(buyers.distinct()) == {customer}
    assert not Order.objects.filter(customer=other_customer).exists()
    assert set(cart.lines.values_list("product__tax_rate__country", flat=True)) == {"NL", None}
    assert Order.objects.get(currency__code="EUR", customer__username="alice") == cart


def test_time_zones(cart, customer):
    assert timezone.get_current_timezone_name() == "Europe/Amsterdam"
    utc = dt_timezone.utc

    # New Year's Eve, 23:30 UTC, is already the next year in Amsterdam.
    new_year = datetime(2023, 12, 31, 23, 30, tzinfo=utc)
    Order.objects.filter(pk=cart.pk).update(created_at=new_year)
    cart.refresh_from_db()
    assert timezone.is_aware(cart.created_at)
    assert cart.created_at == new_year
    local = timezone.localtime(cart.created_at)
    assert (local.year, local.hour, local.utcoffset()) == (2024, 0, timedelta(hours=1))
    assert order_number(cart) == f"SO-2024-{cart.pk:06d}"

    # Summer time: UTC+2.
    summer = Order.objects.create(customer=customer)
    Order.objects.filter(pk=summer.pk).update(created_at=datetime(2024, 6, 30, 22, 15, tzinfo=utc))
    day_start = timezone.make_aware(datetime(2024, 7, 1))
    assert day_start.utcoffset() == timedelta(hours=2)
    on_july_first = Order.objects.filter(
        created_at__gte=day_start, created_at__lt=day_start + timedelta(days=1)
    )
    assert list(on_july_first) == [summer]

    # auto_now_add stores the current time, aware.
    fresh = Order.objects.create(customer=customer)
    assert abs(timezone.now() - fresh.created_at) < timedelta(minutes=5)


def test_place_order_inside_a_test_transaction(cart, product, cheap_product):
    placed = place_order(cart)
    assert placed.status == Order.Status.PLACED
    assert placed.number.startswith("SO-")
    product.refresh_from_db()
    cheap_product.refresh_from_db()
    assert (product.stock, cheap_product.stock) == (3, 97)
    with pytest.raises(ValueError, match="not a cart"):
        place_order(placed)
