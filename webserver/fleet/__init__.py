"""Fleet mode: many SSH hosts (agents) sharing one hub of identical replicas on PostgreSQL."""
