"""The custom user model and its addresses."""

from __future__ import annotations

import pytest
from accounts.models import Address, User
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.db import IntegrityError, transaction

pytestmark = pytest.mark.django_db


def test_custom_user_model(customer, euro):
    user_model = get_user_model()
    assert user_model is User
    assert settings.AUTH_USER_MODEL == "accounts.User"
    user = user_model.objects.get(username="alice")
    assert user.phone_number == "+31 20 555 0101"
    assert user.marketing_opt_in is False
    assert user.date_of_birth is None
    assert not user.has_usable_password()
    # Foreign key from accounts to catalog.
    assert user.preferred_currency == euro
    assert list(user_model.objects.filter(preferred_currency__code="EUR")) == [customer]


def test_password_login(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = get_user_model().objects.create_user(username="carol", password="correct horse")
    assert user.check_password("correct horse")
    assert authenticate(username="carol", password="correct horse") == user
    assert authenticate(username="carol", password="wrong") is None


def test_duplicate_username_is_rejected(customer):
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(username="alice", email="other@example.com")
    # The savepoint was rolled back; the connection is usable and the first user is there.
    assert User.objects.filter(username="alice").count() == 1


@pytest.mark.parametrize("attempt", [1, 2])
def test_rows_do_not_leak_between_tests(attempt):
    assert not User.objects.filter(username="repeat").exists()
    User.objects.create_user(username="repeat", email=f"repeat{attempt}@example.com")


def test_addresses(customer, other_customer):
    Address.objects.create(
        user=customer, line1="Damrak 1", postal_code="1012 LG", city="Amsterdam", country="NL"
    )
    home = Address.objects.create(
        user=customer,
        line1="Coolsingel 40",
        postal_code="3011 AD",
        city="Rotterdam",
        country="NL",
        is_default=True,
    )
    Address.objects.create(
        user=other_customer, line1="Grote Markt 1", postal_code="1000", city="Brussel", country="BE"
    )
    assert customer.addresses.count() == 2
    assert customer.addresses.get(is_default=True) == home
    assert str(home) == "Coolsingel 40, 3011 AD Rotterdam"
    assert set(User.objects.filter(addresses__country="NL").distinct()) == {customer}
