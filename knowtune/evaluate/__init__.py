"""Evaluation: closed-book QA by SliCK category, edit metrics under labelled protocols, multiple choice."""
