"""Read models built from the event log: the directory and its SQL query compiler."""
