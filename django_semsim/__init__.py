"""django_semsim: semantic search on Django models, on top of semsim_pg.

``from django_semsim.models import SemanticModel``; see the README's Django section. Nothing is
imported here so that ``INSTALLED_APPS`` can load the package before the app registry is ready.
"""

__all__: list[str] = []
