"""The read side: a study's runs as tables, findings computed by rules, figures, and the report.
Only ``analyze`` touches the store (through ``actopt.tracking.queries``); the rest are pure functions of frames."""
