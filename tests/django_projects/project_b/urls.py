"""URLconf of test project B."""

from django.http import HttpRequest, HttpResponse
from django.urls import path


def index(request: HttpRequest) -> HttpResponse:
    """Name the project that answered."""
    return HttpResponse("project B")


urlpatterns = [
    path("beta/", index, name="home"),
    path("beta/only/", index, name="beta-only"),
]
