"""ssh-auth-server: the broker, the PhoneCheck client and the webhook, run as the service user."""
