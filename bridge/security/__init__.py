"""OPC UA security: the PKI folder, users and roles, and the audit trail (docs/security.md)."""
