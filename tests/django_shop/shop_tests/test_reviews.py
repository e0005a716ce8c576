"""Reviews tie users to products across apps."""

from __future__ import annotations

import pytest
from catalog.models import Product
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count
from reviews.models import Review

pytestmark = pytest.mark.django_db


def test_one_review_per_author_and_product(customer, product):
    Review.objects.create(product=product, author=customer, rating=4, title="Good fun")
    with pytest.raises(IntegrityError), transaction.atomic():
        Review.objects.create(product=product, author=customer, rating=1)
    assert product.reviews.get().rating == 4


def test_average_rating_and_helpful_votes(customer, other_customer, product, cheap_product):
    first = Review.objects.create(product=product, author=customer, rating=5)
    Review.objects.create(product=product, author=other_customer, rating=2)
    Review.objects.create(product=cheap_product, author=customer, rating=3)
    first.helpful_votes.add(other_customer, customer)

    ratings = dict(
        Product.objects.filter(pk__in=[product.pk, cheap_product.pk])
        .annotate(avg=Avg("reviews__rating"))
        .values_list("slug", "avg")
    )
    assert float(ratings["settlers-of-the-dunes"]) == pytest.approx(3.5)
    assert float(ratings["dice-set"]) == pytest.approx(3.0)

    assert set(other_customer.helpful_reviews.all()) == {first}
    most_helpful = Review.objects.annotate(votes=Count("helpful_votes")).order_by("-votes")[0]
    assert (most_helpful, most_helpful.votes) == (first, 2)


def test_rating_must_be_one_to_five(customer, product):
    review = Review(product=product, author=customer, rating=6)
    with pytest.raises(ValidationError) as excinfo:
        review.full_clean()
    assert "rating" in excinfo.value.message_dict
