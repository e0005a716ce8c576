"""Placing orders: stock is reserved under row locks so two checkouts cannot oversell."""

from __future__ import annotations

from catalog.models import Product
from django.db import transaction
from django.utils import timezone

from .models import Order


class OutOfStock(Exception):
    def __init__(self, product: Product, wanted: int) -> None:
        super().__init__(f"only {product.stock} of {product.name!r} left, {wanted} wanted")
        self.product = product
        self.wanted = wanted


def order_number(order: Order) -> str:
    year = timezone.localtime(order.created_at).year
    return f"SO-{year}-{order.pk:06d}"


def place_order(order: Order) -> Order:
    """Take the order's products from stock and mark it placed, or change nothing at all."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        if order.status != Order.Status.CART:
            raise ValueError(f"{order} is not a cart")
        lines = list(order.lines.all())
        products = {
            p.pk: p
            for p in Product.objects.select_for_update()
            .filter(pk__in=[line.product_id for line in lines])
            .order_by("pk")
        }
        for line in lines:
            product = products[line.product_id]
            if product.stock < line.quantity:
                raise OutOfStock(product, line.quantity)
            product.stock -= line.quantity
            product.save(update_fields=["stock"])
        order.status = Order.Status.PLACED
        order.number = order.number or order_number(order)
        order.save(update_fields=["status", "number", "updated"])
    return order
