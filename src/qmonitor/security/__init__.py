"""Who may do what, without I/O: authz objects, the roles policy, certificate names.

See docs/SECURITY.md.
"""
