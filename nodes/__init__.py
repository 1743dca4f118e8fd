"""Standard nodes: basic producers and sinks, video input/output and vision."""
