"""The pure core: statuses, transition rules, policies. No I/O, no clock reads."""
