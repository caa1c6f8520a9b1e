"""Evaluation: knowledge-edit metrics (Reliability / Generality / Locality) under two labelled protocols."""
