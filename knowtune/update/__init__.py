"""Knowledge updating: F-Learning's parameter arithmetic (forget the old facts, then learn the new)."""
