"""Request and response models of the HTTP API (pydantic; unknown fields are refused)."""
