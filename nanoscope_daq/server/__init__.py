"""The instrument server: bluesky-queueserver's RE Manager, Redis, Tiled, the 0MQ document proxy."""
