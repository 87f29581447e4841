"""Small helpers shared by every layer: devices, seeds, atomic files, progress bars."""
