"""URLconf of test project A."""

from django.http import HttpRequest, HttpResponse
from django.urls import path


def index(request: HttpRequest) -> HttpResponse:
    """Name the project that answered."""
    return HttpResponse("project A")


urlpatterns = [
    path("alpha/", index, name="home"),
    path("alpha/only/", index, name="alpha-only"),
]
