"""Curation: training sets built from what a probe says the model already knows."""
