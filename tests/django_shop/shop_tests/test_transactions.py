"""Real transactions: commits, rollbacks, row locks and on_commit callbacks.

These tests are not wrapped in a transaction; what they write is committed, and the
tables are emptied after each of them.
"""

from __future__ import annotations

import pytest
from catalog.models import Product
from django.db import connection, transaction
from orders.models import Order
from orders.services import OutOfStock, place_order


def test_place_order_commits_under_row_locks(transactional_db, cart, product, cheap_product):
    assert not connection.in_atomic_block
    place_order(cart)

    # Committed: visible from the autocommit connection, outside any transaction.
    assert Order.objects.get(pk=cart.pk).status == Order.Status.PLACED
    assert Product.objects.get(pk=product.pk).stock == 3

    with transaction.atomic():
        locked = Product.objects.select_for_update().get(pk=cheap_product.pk)
        assert connection.in_atomic_block
        locked.stock += 10
        locked.save(update_fields=["stock"])
    assert Product.objects.get(pk=cheap_product.pk).stock == 107


@pytest.mark.django_db(transaction=True)
def test_failed_order_changes_nothing(cart, product, cheap_product):
    # The first line (2 x product) can be served, the second (3 x cheap_product) cannot:
    # the stock already taken for the first line must be given back.
    Product.objects.filter(pk=cheap_product.pk).update(stock=1)
    with pytest.raises(OutOfStock) as excinfo:
        place_order(cart)
    assert excinfo.value.wanted == 3
    assert Product.objects.get(pk=product.pk).stock == 5
    assert Product.objects.get(pk=cheap_product.pk).stock == 1
    assert Order.objects.get(pk=cart.pk).status == Order.Status.CART


@pytest.mark.django_db(transaction=True)
def test_on_commit_callbacks_run_on_commit(customer):
    sent = []
    with transaction.atomic():
        order = Order.objects.create(customer=customer)
        transaction.on_commit(lambda: sent.append(order.pk))
        assert sent == []
    assert sent == [order.pk]

    with pytest.raises(RuntimeError), transaction.atomic():
        Order.objects.create(customer=customer)
        transaction.on_commit(lambda: sent.append("never"))
        raise RuntimeError("abort")
    assert sent == [order.pk]
    assert Order.objects.filter(customer=customer).count() == 1
