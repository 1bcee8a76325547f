"""django_semsim: semantic search on Django models, on top of semsim_pg."""
