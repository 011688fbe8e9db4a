"""The HTTP server: the aiohttp application with every feature's routes (app), and its runner."""
