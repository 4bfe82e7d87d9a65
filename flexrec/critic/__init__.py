"""flexrec.critic."""
