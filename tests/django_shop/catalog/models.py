from django.db import models


class Currency(models.Model):
    code = models.CharField(max_length=3, unique=True)
    name = models.CharField(max_length=50)
    symbol = models.CharField(max_length=5)
    decimal_places = models.PositiveSmallIntegerField(default=2)

    class Meta:
        verbose_name_plural = "currencies"
        ordering = ["code"]  # noqa: RUF012

    def __str__(self) -> str:
        return self.code


class TaxRate(models.Model):
    name = models.CharField(max_length=50)
    country = models.CharField(max_length=2)
    rate = models.DecimalField(max_digits=5, decimal_places=2, help_text="percent")

    class Meta:
        ordering = ["country", "name"]  # noqa: RUF012
        constraints = (
            models.UniqueConstraint(fields=["country", "name"], name="unique_tax_rate_per_country"),
        )

    def __str__(self) -> str:
        return f"{self.country} {self.name} ({self.rate}%)"


class Category(models.Model):
    name = models.CharField(max_length=120, unique=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )

    class Meta:
        verbose_name_plural = "categories"
        ordering = ["name"]  # noqa: RUF012

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name = models.CharField(max_length=50, unique=True)
    slug = models.SlugField(max_length=60, unique=True)

    class Meta:
        ordering = ["name"]  # noqa: RUF012

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=220, unique=True)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField(default=True)
    tax_rate = models.ForeignKey(
        TaxRate, null=True, blank=True, on_delete=models.SET_NULL, related_name="products"
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="products")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]  # noqa: RUF012
        indexes = (models.Index(fields=["category", "name"], name="product_category_name_idx"),)

    def __str__(self) -> str:
        return self.name
