"""Fixtures that create the rows most tests need: customers, products, orders."""

from __future__ import annotations

from decimal import Decimal

import pytest
from catalog.models import Category, Currency, Product, TaxRate
from django.contrib.auth import get_user_model
from orders.models import Order, OrderLine


@pytest.fixture
def euro(db):
    # Seeded by a data migration; get_or_create keeps the fixture usable after a
    # transactional test has flushed the tables.
    currency, _ = Currency.objects.get_or_create(
        code="EUR", defaults={"name": "Euro", "symbol": "€", "decimal_places": 2}
    )
    return currency


@pytest.fixture
def customer(db, euro):
    return get_user_model().objects.create_user(
        username="alice",
        email="alice@example.com",
        first_name="Alice",
        phone_number="+31 20 555 0101",
        preferred_currency=euro,
    )


@pytest.fixture
def other_customer(db):
    return get_user_model().objects.create_user(username="bob", email="bob@example.com")


@pytest.fixture
def category(db):
    return Category.objects.create(name="Board games")


@pytest.fixture
def nl_standard_rate(db):
    rate, _ = TaxRate.objects.get_or_create(
        country="NL", name="standard", defaults={"rate": Decimal("21.00")}
    )
    return rate


@pytest.fixture
def product(category, nl_standard_rate):
    return Product.objects.create(
        category=category,
        name="Settlers of the Dunes",
        slug="settlers-of-the-dunes",
        price=Decimal("39.95"),
        stock=5,
        tax_rate=nl_standard_rate,
    )


@pytest.fixture
def cheap_product(category):
    return Product.objects.create(
        category=category, name="Dice set", slug="dice-set", price=Decimal("4.50"), stock=100
    )


@pytest.fixture
def cart(customer, euro, product, cheap_product):
    """An order in the cart state: 2 x product and 3 x cheap_product."""
    order = Order.objects.create(customer=customer, currency=euro)
    OrderLine.objects.create(order=order, product=product, quantity=2, unit_price=product.price)
    OrderLine.objects.create(
        order=order, product=cheap_product, quantity=3, unit_price=cheap_product.price
    )
    return order
