from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import Address, User


class AddressInline(admin.TabularInline):
    model = Address
    extra = 0


@admin.register(User)
class ShopUserAdmin(UserAdmin):
    fieldsets = (
        *UserAdmin.fieldsets,
        ("Shop", {"fields": ("phone_number", "date_of_birth", "preferred_currency")}),
    )
    inlines = (AddressInline,)
