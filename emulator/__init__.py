"""A built-in emulator of the PhoneCheck v0.2 API, so ssh-auth runs and is tested with no account."""
