"""Templates and static files, shipped inside the package as ``fmappliance.assets``."""
