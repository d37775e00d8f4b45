"""Process- and machine-level facts and settings: usable memory and cores, process tuning, stop signals."""
