"""Suite-wide fixtures. Area fixtures live in each folder's conftest.py."""
