"""The backend skeleton's promises: blips never charged, cancels that stop the bill, one submit per attempt."""
