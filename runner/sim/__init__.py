"""Local stand-ins for the clouds: the instance-metadata simulator and the preemptor."""
