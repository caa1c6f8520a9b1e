"""Probing what a model knows: SliCK categories (slick.py) and the multiple-choice probe (multiple_choice.py)."""
