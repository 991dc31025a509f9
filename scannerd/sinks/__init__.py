"""Where events go: the local HIS socket, MQTT."""
