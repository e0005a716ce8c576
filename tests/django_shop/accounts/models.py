from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A customer or a member of staff."""

    phone_number = models.CharField(max_length=32, blank=True)
    date_of_birth = models.DateField(null=True, blank=True)
    marketing_opt_in = models.BooleanField(default=False)
    preferred_currency = models.ForeignKey(
        "catalog.Currency", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )


class Address(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="addresses")
    line1 = models.CharField(max_length=200)
    line2 = models.CharField(max_length=200, blank=True)
    postal_code = models.CharField(max_length=16)
    city = models.CharField(max_length=100)
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2 code")
    is_default = models.BooleanField(default=False)

    class Meta:
        verbose_name_plural = "addresses"
        indexes = (models.Index(fields=["user", "is_default"], name="address_user_default_idx"),)

    def __str__(self) -> str:
        return f"{self.line1}, {self.postal_code} {self.city}"
