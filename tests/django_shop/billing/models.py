from django.db import models


class Invoice(models.Model):
    order = models.OneToOneField("orders.Order", on_delete=models.PROTECT, related_name="invoice")
    number = models.CharField(max_length=20, unique=True)
    issued_at = models.DateTimeField()
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.ForeignKey("catalog.Currency", on_delete=models.PROTECT, related_name="+")
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at"]  # noqa: RUF012

    def __str__(self) -> str:
        return self.number


class Payment(models.Model):
    class Method(models.TextChoices):
        CARD = "card", "Card"
        IDEAL = "ideal", "iDEAL"
        TRANSFER = "transfer", "Bank transfer"

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="payments")
    method = models.CharField(max_length=16, choices=Method.choices)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    received_at = models.DateTimeField()
    reference = models.CharField(max_length=64)

    class Meta:
        ordering = ["received_at"]  # noqa: RUF012
        constraints = (
            models.UniqueConstraint(
                fields=["method", "reference"], name="unique_payment_reference"
            ),
        )

    def __str__(self) -> str:
        return f"{self.amount} by {self.method} ({self.reference})"
