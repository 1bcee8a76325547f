"""Concrete semantic models for the django_semsim tests."""
