"""The papers' studies, one package each (config, study, findings, report, configs/<preset>.yaml),
registered in `registry.STUDIES`; `common` and `stats` hold what they share."""
