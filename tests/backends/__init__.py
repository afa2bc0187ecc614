"""The backend skeleton's promises: transient faults never charged, cancels that stop the bill, one submit per attempt, plug-ins."""
