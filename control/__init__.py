"""Clickacall control plane (to come: issue 3)."""
