"""The launcher: reads a manifest, spawns every node process and steers the flow."""
