"""Bundled YAML recipes; load them with ``compress.load_recipe(name)``."""
