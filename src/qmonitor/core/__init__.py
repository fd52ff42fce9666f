"""The command core: registry, handler styles, schema, errors, events and jobs. No I/O here."""
