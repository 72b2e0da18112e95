"""Framework-free actions: one function per audited operation, shared by API and CLI."""
