"""Translators: Hurd-style servers (libports, libpager and the file systems built on them)."""
