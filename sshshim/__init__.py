"""The login shim sshd runs as the user (ForceCommand): standard library only."""
