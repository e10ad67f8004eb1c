"""caproto PV groups serving the instrument's EPICS interfaces over the world model."""
