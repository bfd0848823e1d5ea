"""Bundled YAML recipes, installed as ``compress.recipes``; load them with ``compress.load_recipe(name)``."""
