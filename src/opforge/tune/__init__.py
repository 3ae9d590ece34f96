"""Search-based tuning: candidate schedules built on the CPU host, measured on a GPU host, kept in records."""
