"""Pictures: `canvas` (fast raster frames), `figures` (matplotlib), `export` (GIF, .npy, .csv), `style` (palette)."""
