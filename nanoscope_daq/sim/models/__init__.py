"""Physical models of the simulated instrument; pure Python, no Channel Access."""
