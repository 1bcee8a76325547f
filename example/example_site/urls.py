from articles import views
from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("", views.search, name="search"),
    path("articles/<int:pk>/", views.detail, name="article"),
    path("admin/", admin.site.urls),
]
