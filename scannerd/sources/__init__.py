"""Scanner transports: each turns one device's input into frames for the pipeline."""
