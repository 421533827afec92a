"""Handler styles: each module adapts one way of writing handlers to the core WebSocket."""
