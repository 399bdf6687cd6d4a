"""The root-run `ssh-auth` command: install, uninstall, users, doctor. Never imported by the service."""
