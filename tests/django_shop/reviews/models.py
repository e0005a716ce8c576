from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Review(models.Model):
    product = models.ForeignKey("catalog.Product", on_delete=models.CASCADE, related_name="reviews")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviews"
    )
    title = models.CharField(max_length=120, blank=True)
    rating = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    body = models.TextField(blank=True)
    helpful_votes = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="helpful_reviews"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]  # noqa: RUF012
        constraints = (
            models.UniqueConstraint(fields=["product", "author"], name="one_review_per_author"),
        )

    def __str__(self) -> str:
        return f"{self.rating}/5 for {self.product} by {self.author}"
