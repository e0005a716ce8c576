from django.contrib import admin

from .models import Category, Currency, Product, Tag, TaxRate


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "category", "price", "stock", "is_active")
    list_filter = ("category", "is_active", "tags")
    prepopulated_fields = {"slug": ("name",)}  # noqa: RUF012
    search_fields = ("name", "slug")


admin.site.register((Category, Currency, Tag, TaxRate))
