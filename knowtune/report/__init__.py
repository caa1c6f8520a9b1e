"""Reports: self-contained HTML pages (tables, embedded plots) and machine-readable JSON."""
