"""fmappliance: operate Frappe / ERPNext stacks from a browser, safely."""
