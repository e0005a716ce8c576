"""Invoices and payments for placed orders."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from billing.models import Invoice, Payment
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

pytestmark = pytest.mark.django_db


def test_invoice_with_payments(cart, euro):
    issued = timezone.now()
    invoice = Invoice.objects.create(
        order=cart, number="INV-0001", issued_at=issued, amount=cart.total, currency=euro
    )
    assert cart.invoice == invoice
    Payment.objects.create(
        invoice=invoice,
        method=Payment.Method.IDEAL,
        amount=Decimal("50.00"),
        received_at=issued + timedelta(minutes=5),
        reference="ideal-123",
    )
    Payment.objects.create(
        invoice=invoice,
        method=Payment.Method.CARD,
        amount=Decimal("43.40"),
        received_at=issued + timedelta(minutes=1),
        reference="card-987",
    )
    paid = invoice.payments.aggregate(paid=Sum("amount"))["paid"]
    assert paid == invoice.amount == Decimal("93.40")
    assert [p.method for p in invoice.payments.all()] == ["card", "ideal"]

    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.create(
            invoice=invoice,
            method=Payment.Method.IDEAL,
            amount=Decimal("1.00"),
            received_at=issued,
            reference="ideal-123",
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Invoice.objects.create(
            order=cart, number="INV-0002", issued_at=issued, amount=0, currency=euro
        )
